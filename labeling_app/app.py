"""Entry script (placeholder until the annotation app lands)."""

import streamlit as st

st.set_page_config(page_title="RLHF Studio", layout="wide")
st.title("RLHF Studio")
st.write("The annotation app is being built.")
