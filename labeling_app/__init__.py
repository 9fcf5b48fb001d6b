"""RLHF Studio's Streamlit app: thin pages over `rlhf`. No SQL, statistics or training code here."""
