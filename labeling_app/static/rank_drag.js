// The Rank page's order strip: one chip per card, best first, "=" between tied cards. A chip
// dragged onto another chip's place sends {card, place, nonce}; the server applies it as ↑ / ↓
// presses would (RankOrder.drop), then sends the new order back as data. No remote resource.
export default function (component) {
  const { data, parentElement, setStateValue } = component;
  const strip = parentElement.querySelector(".rlhf-rank-strip");
  strip.replaceChildren();
  let dragged = null;
  data.seq.forEach((card, place) => {
    if (place > 0) {
      const sep = document.createElement("span");
      sep.className = "rlhf-rank-sep";
      sep.textContent = data.tied.includes(card) ? "=" : ">";
      strip.appendChild(sep);
    }
    const chip = document.createElement("span");
    chip.className = "rlhf-rank-chip";
    chip.textContent = data.letters[card];
    chip.draggable = true;
    chip.dataset.card = String(card);
    chip.dataset.place = String(place);
    chip.setAttribute("role", "listitem");
    chip.title = `Drag ${data.letters[card]} to another place`;
    chip.addEventListener("dragstart", (e) => {
      dragged = card;
      e.dataTransfer.effectAllowed = "move";
      e.dataTransfer.setData("text/plain", String(card));
      chip.classList.add("rlhf-rank-dragging");
    });
    chip.addEventListener("dragend", () => chip.classList.remove("rlhf-rank-dragging"));
    chip.addEventListener("dragover", (e) => { e.preventDefault(); chip.classList.add("rlhf-rank-over"); });
    chip.addEventListener("dragleave", () => chip.classList.remove("rlhf-rank-over"));
    chip.addEventListener("drop", (e) => {
      e.preventDefault();
      chip.classList.remove("rlhf-rank-over");
      const from = dragged !== null ? dragged : Number(e.dataTransfer.getData("text/plain"));
      dragged = null;
      if (Number.isNaN(from) || from === card) return;
      setStateValue("drop", { token: data.token, card: from, place, nonce: `${Date.now()}-${Math.random()}` });
    });
    strip.appendChild(chip);
  });
}
