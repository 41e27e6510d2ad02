// Live results: follow the gateway's server-sent events and redraw the
// counts and bars in place.
//
// While the stream is up, the browser reconnects a broken one by itself
// after the `retry:` time the gateway gave this stream (its own, with
// jitter, so a gateway's streams do not all come back at once). When the
// gateway refuses the stream (503: too many streams, or it is shutting
// down) the browser gives up on it; then this script polls /api/results
// and tries the stream again, both after a delay that grows with each
// failure and has a random part. Without JavaScript the page reloads
// itself (a <noscript> refresh in its head).
"use strict";
(() => {
  const list = document.getElementById("results");
  const total = document.getElementById("total");
  const live = document.getElementById("live");
  if (!list || !total) return;

  const LIVE = "Live: updates as votes are counted.";
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

  // Backoff after failures: 1 s, 2 s, 4 s ... up to 30 s, each a random
  // time between half and all of it ("equal jitter").
  let failures = 0;
  const backoff = () => {
    const ceiling = Math.min(30000, 1000 * 2 ** Math.min(failures, 5));
    failures += 1;
    return ceiling / 2 + Math.random() * (ceiling / 2);
  };

  // Polling while the stream is refused: one GET /api/results now and then.
  let pollTimer = null;
  async function poll() {
    pollTimer = null;
    try {
      const answer = await fetch("/api/results", { headers: { accept: "application/json" } });
      if (answer.ok) render(await answer.json());
    } catch (_) {
      // The gateway is away: the next attempt comes after the backoff.
    }
  }

  let source = null;
  function connect() {
    if (!window.EventSource) {
      // No SSE at all: poll every few seconds.
      poll();
      setTimeout(connect, 5000 + Math.random() * 5000);
      return;
    }
    source = new EventSource("/api/results/stream");
    source.addEventListener("tally", (event) => {
      failures = 0;
      render(JSON.parse(event.data));
      live.textContent = LIVE;
    });
    source.addEventListener("open", () => { live.textContent = LIVE; });
    source.addEventListener("error", () => {
      if (source.readyState !== EventSource.CLOSED) {
        // The browser reconnects by itself, after the stream's retry hint.
        live.textContent = "Reconnecting…";
        return;
      }
      // Refused (503) or not an event stream: poll, and try again later.
      source = null;
      live.textContent = "Live updates paused; retrying soon.";
      const delay = backoff();
      if (pollTimer === null) pollTimer = setTimeout(poll, Math.random() * delay);
      setTimeout(connect, delay);
    });
  }

  live.textContent = "Connecting…";
  connect();
})();
