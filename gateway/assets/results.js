// Live results: follow the gateway's server-sent events and redraw the
// counts and bars in place.
//
// While the stream is up, the browser reconnects a broken one by itself
// after the `retry:` time the gateway gave this stream (its own, with
// jitter, so a gateway's streams do not all come back at once). When the
// gateway refuses the stream (503: too many streams open) the browser
// gives up on it; then this script polls /api/results every 5 to 10 s (at
// random) while it waits, and tries the stream again after a delay that
// grows with each failure, has a random part and is never under the
// gateway's Retry-After (2 s). Polling moves this page's load to
// GetResults. A gateway shutting down ends its streams after a retry
// hint, and the browser reconnects by itself (to another gateway).
// Without JavaScript the page reloads itself (a <noscript> refresh in its
// head).
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

  // The gateway's Retry-After on a refused stream, in ms: no retry sooner.
  const RETRY_AFTER = 2000;
  // Stream retries after failures: a ceiling of 2 s, 4 s, 8 s ... up to
  // 30 s, each wait a random time between half and all of it ("equal
  // jitter"), never under RETRY_AFTER.
  let failures = 0;
  const backoff = () => {
    const ceiling = Math.min(30000, RETRY_AFTER * 2 ** Math.min(failures, 4));
    failures += 1;
    return Math.max(RETRY_AFTER, ceiling / 2 + Math.random() * (ceiling / 2));
  };

  // While the stream is refused: its own loop, one GET /api/results every
  // 5 to 10 s (at random, so refused pages do not poll in step), apart from
  // the stream retries. Each poll is one GetResults call behind the gateway.
  let polling = null;
  async function poll() {
    try {
      const answer = await fetch("/api/results", { headers: { accept: "application/json" } });
      if (answer.ok) render(await answer.json());
    } catch (_) {
      // The gateway is away: the next poll comes on schedule.
    }
  }
  function startPolling() {
    if (polling !== null) return;
    const next = () => {
      polling = setTimeout(async () => {
        await poll();
        if (polling !== null) next();
      }, 5000 + Math.random() * 5000);
    };
    poll();
    next();
  }
  function stopPolling() {
    if (polling !== null) clearTimeout(polling);
    polling = null;
  }

  let source = null;
  function connect() {
    if (!window.EventSource) {
      // No SSE at all: poll for good.
      startPolling();
      return;
    }
    source = new EventSource("/api/results/stream");
    source.addEventListener("tally", (event) => {
      failures = 0;
      stopPolling();
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
      // Refused (503) or not an event stream: poll meanwhile, and try the
      // stream again later.
      source = null;
      live.textContent = "Live updates paused; retrying soon.";
      startPolling();
      setTimeout(connect, backoff());
    });
  }

  live.textContent = "Connecting…";
  connect();
})();
