// Live results: subscribe to the gateway's server-sent events and redraw
// the counts and bars in place. The browser reconnects by itself.
"use strict";
(() => {
  const list = document.getElementById("results");
  const total = document.getElementById("total");
  const live = document.getElementById("live");
  if (!list || !total || !window.EventSource) return;

  const totalText = (n) => (n === 0 ? "No votes yet. Be the first!" : n === 1 ? "1 vote" : `${n} votes`);

  function row(option) {
    let item = list.querySelector(`li[data-option="${CSS.escape(option.id)}"]`);
    if (item) return item;
    item = document.createElement("li");
    item.dataset.option = option.id;
    const line = document.createElement("div");
    line.className = "row";
    const label = document.createElement("span");
    label.className = "label";
    const numbers = document.createElement("span");
    numbers.className = "numbers";
    const count = document.createElement("span");
    count.className = "count";
    const percent = document.createElement("span");
    percent.className = "percent";
    numbers.append(count, " · ", percent, "%");
    line.append(label, numbers);
    const bar = document.createElement("progress");
    bar.max = 100;
    item.append(line, bar);
    list.append(item);
    return item;
  }

  function render(tally) {
    total.textContent = totalText(tally.total);
    for (const option of tally.options) {
      const item = row(option);
      item.querySelector(".label").textContent = option.label;
      item.querySelector(".count").textContent = String(option.count);
      item.querySelector(".percent").textContent = option.percent.toFixed(1);
      const bar = item.querySelector("progress");
      bar.value = option.percent;
      bar.textContent = `${option.percent}%`;
    }
  }

  live.textContent = "Connecting…";
  const source = new EventSource("/api/results/stream");
  source.addEventListener("tally", (event) => {
    render(JSON.parse(event.data));
    live.textContent = "Live: updates as votes are counted.";
  });
  source.addEventListener("open", () => { live.textContent = "Live: updates as votes are counted."; });
  source.addEventListener("error", () => { live.textContent = "Reconnecting…"; });
})();
