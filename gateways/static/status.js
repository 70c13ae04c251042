// The status page: processes and providers from /status.json every few seconds, and live
// candles of one instrument from the WebSocket gateway (README, "WebSocket gateway").
// Query parameters: api_key (the read key, also the gateway's; else the one typed into the
// page's form, kept for the tab's session), symbol, interval (1m).
"use strict";

(() => {
  const REFRESH_MS = 5000;
  const SNAPSHOT = 120; // bars asked for on subscribing
  const KEEP = 500; // bars kept in memory
  const FALLBACK_SYMBOL = "SIM0001"; // what `make up`'s simulator publishes
  const CLOSE_UNAUTHORIZED = 4401;

  const params = new URLSearchParams(location.search);
  const KEY_ITEM = "marketstream-api-key";
  const apiKey = params.get("api_key") || sessionStorage.getItem(KEY_ITEM) || "";
  if (params.has("api_key")) { // kept for the tab's session, out of the address and history
    sessionStorage.setItem(KEY_ITEM, apiKey);
    params.delete("api_key");
    history.replaceState(null, "", `${location.pathname}?${params}`);
  }
  const interval = params.get("interval") || "1m";
  const $ = (id) => document.getElementById(id);

  const chart = {
    symbol: params.get("symbol"), // null: the first instrument with bars, else FALLBACK_SYMBOL
    symbols: new Set(),
    bars: new Map(), // ts_us -> the bar's latest revision
    lastSeq: null, // of our channel, to resume after a reconnect
    listing: false, // between the wildcard's subscribe and unsubscribe
    wsUrl: null,
    retryMs: 1000,
    drawPending: false,
  };
  const channel = () => `bars.${interval}.${chart.symbol}`;

  function showProblem(text) {
    $("problem").textContent = text;
    $("problem").hidden = !text;
  }

  // ---- processes and providers -------------------------------------------------------------

  function row(tbody, cells, testid) {
    const tr = tbody.insertRow();
    if (testid) tr.dataset.testid = testid;
    for (const [text, cls] of cells) {
      const td = tr.insertCell();
      td.textContent = text; // never innerHTML: the values come from other processes
      if (cls) td.className = cls;
    }
    return tr;
  }

  function renderProcesses(processes) {
    const tbody = $("processes").tBodies[0];
    tbody.replaceChildren();
    for (const p of processes) {
      const checks = Object.entries(p.checks)
        .map(([name, ok]) => `${name} ${ok ? "ok" : "failing"}`)
        .join(", ");
      const status = p.http_status && p.status !== "ok" ? `${p.status} (HTTP ${p.http_status})` : p.status;
      const tr = row(tbody, [
        [p.name],
        [status, p.status === "ok" ? "ok" : "bad"],
        [checks],
        [`${p.response_ms} ms`],
      ], `process-${p.name}`);
      tr.dataset.status = p.status;
    }
  }

  function details(provider) {
    const skip = new Set(["process", "provider", "state"]);
    return Object.entries(provider)
      .filter(([key, value]) => !skip.has(key) && value !== null)
      .map(([key, value]) => {
        if (typeof value !== "object") return `${key} ${value}`;
        const total = Object.values(value).reduce((a, b) => a + b, 0);
        return `${key} ${total}`;
      })
      .join(" · ");
  }

  function renderProviders(providers) {
    const tbody = $("providers").tBodies[0];
    tbody.replaceChildren();
    if (!providers.length) row(tbody, [["no connector answered /stats/providers"]]);
    for (const p of providers) {
      const healthy = ["streaming", "polling", "closed"].includes(p.state);
      const tr = row(tbody, [
        [p.process],
        [p.provider],
        [p.state ?? "", healthy ? "ok" : "bad"],
        [details(p), "details"],
      ], `provider-${p.provider}`);
      tr.dataset.state = p.state ?? "";
    }
  }

  async function refreshStatus() {
    try {
      const response = await fetch("/status.json", { headers: { "X-API-Key": apiKey }, cache: "no-store" });
      if (response.status === 401) {
        showProblem("The API key was refused: type the read key below (with `make up`, it is in .run/ws-api-key).");
        $("key-form").hidden = false;
        return; // no retry: a reload with the key is needed
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const body = await response.json();
      renderProcesses(body.processes);
      renderProviders(body.providers);
      $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
      if (chart.wsUrl === null) {
        chart.wsUrl = body.ws_url;
        connect();
      }
    } catch (err) {
      $("updated").textContent = `the API does not answer (${err.message}); retrying`;
    }
    setTimeout(refreshStatus, REFRESH_MS);
  }

  // ---- candles over WebSocket ---------------------------------------------------------------

  function setWsState(text) {
    $("ws-state").textContent = text;
  }

  function connect() {
    const url = new URL(chart.wsUrl);
    url.searchParams.set("api_key", apiKey); // browsers cannot set headers on a WebSocket
    const ws = new WebSocket(url);
    const send = (message) => ws.send(JSON.stringify(message));
    setWsState("connecting");
    ws.onopen = () => {
      chart.retryMs = 1000;
      setWsState("open");
      // List the instruments that have bars: a wildcard with no snapshot answers one
      // `subscribed` per channel; `unsubscribed` ends the list.
      chart.listing = true;
      send({ op: "subscribe", channels: [`bars.${interval}.*`], snapshot: 0 });
      send({ op: "unsubscribe", channels: [`bars.${interval}.*`] });
    };
    ws.onmessage = (message) => {
      for (const event of JSON.parse(message.data)) handle(event, send);
    };
    ws.onclose = (event) => {
      if (event.code === CLOSE_UNAUTHORIZED) {
        setWsState("closed: API key refused");
        return;
      }
      setWsState(`closed (${event.code}); reconnecting`);
      setTimeout(connect, chart.retryMs);
      chart.retryMs = Math.min(chart.retryMs * 2, 15000);
    };
  }

  function handle(event, send) {
    if (chart.listing) {
      if (event.type === "subscribed") addSymbol(event.channel.slice(`bars.${interval}.`.length));
      if (event.type === "unsubscribed") {
        chart.listing = false;
        subscribe(send);
      }
      if (event.type === "error") showProblem(`WebSocket: ${event.message}`);
      return;
    }
    if (event.type === "error") showProblem(`WebSocket: ${event.message}`);
    if (event.channel !== channel()) return;
    if (event.type === "snapshot") {
      chart.bars.clear();
      for (const bar of event.bars) chart.bars.set(bar.ts_us, bar);
      chart.lastSeq = event.seq;
    } else if (event.type === "bar") {
      if (chart.lastSeq !== null && event.seq <= chart.lastSeq) return; // seen already
      chart.bars.set(event.bar.ts_us, event.bar); // a revision replaces the bar of its ts
      chart.lastSeq = event.seq;
      trim();
    } else {
      return;
    }
    scheduleDraw();
  }

  function subscribe(send) {
    if (chart.symbol === null) {
      chart.symbol = [...chart.symbols].sort()[0] ?? FALLBACK_SYMBOL;
    }
    addSymbol(chart.symbol);
    const request = { op: "subscribe", channels: [channel()], snapshot: SNAPSHOT };
    if (chart.lastSeq !== null) request.resume = { [channel()]: chart.lastSeq };
    send(request);
    setWsState(`subscribed to ${channel()}`);
  }

  function addSymbol(symbol) {
    if (chart.symbols.has(symbol)) return;
    chart.symbols.add(symbol);
    const select = $("symbol");
    const options = [...chart.symbols].sort().map((s) => new Option(s, s, false, s === chart.symbol));
    select.replaceChildren(...options);
    if (chart.symbol !== null) select.value = chart.symbol;
  }

  function trim() {
    const extra = chart.bars.size - KEEP;
    if (extra <= 0) return;
    const oldest = [...chart.bars.keys()].sort((a, b) => a - b).slice(0, extra);
    for (const ts of oldest) chart.bars.delete(ts);
  }

  function scheduleDraw() {
    if (chart.drawPending) return;
    chart.drawPending = true;
    requestAnimationFrame(() => {
      chart.drawPending = false;
      draw();
    });
  }

  function draw() {
    const canvas = $("chart");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);

    const pad = { left: 8, right: 72, top: 12, bottom: 24 };
    const plotWidth = width - pad.left - pad.right;
    const all = [...chart.bars.values()].sort((a, b) => a.ts_us - b.ts_us);
    const slot = Math.min(14, Math.max(4, plotWidth / Math.max(all.length, 1))); // px per candle
    const bars = all.slice(-Math.floor(plotWidth / slot));
    $("candle-count").textContent = String(bars.length);
    $("last-seq").textContent = chart.lastSeq === null ? "–" : String(chart.lastSeq);
    const hint = $("chart-hint");
    hint.hidden = bars.length > 0;
    hint.textContent = `No ${interval} bar of ${chart.symbol} yet: a bar appears once its interval closes` +
      (interval === "1m" ? " (within about a minute of the first trades; ?interval=1s shows them sooner)." : ".");
    if (!bars.length) {
      $("last-close").textContent = "–";
      return;
    }

    let low = Math.min(...bars.map((b) => b.low));
    let high = Math.max(...bars.map((b) => b.high));
    if (high === low) {
      high += Math.max(Math.abs(high) * 1e-3, 1e-6);
      low -= Math.max(Math.abs(low) * 1e-3, 1e-6);
    }
    const plotHeight = height - pad.top - pad.bottom;
    const y = (price) => pad.top + ((high - price) / (high - low)) * plotHeight;
    const digits = high < 1 ? 4 : 2;

    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const price = low + ((high - low) * i) / 4;
      const py = Math.round(y(price)) + 0.5;
      ctx.strokeStyle = "#eaeef2";
      ctx.beginPath();
      ctx.moveTo(pad.left, py);
      ctx.lineTo(width - pad.right, py);
      ctx.stroke();
      ctx.fillStyle = "#59636e";
      ctx.fillText(price.toFixed(digits), width - pad.right + 6, py);
    }

    ctx.textBaseline = "alphabetic";
    bars.forEach((bar, i) => {
      const x = width - pad.right - (bars.length - i - 0.5) * slot; // the latest at the right
      const color = bar.close >= bar.open ? "#1a7f37" : "#cf222e";
      ctx.strokeStyle = color;
      ctx.fillStyle = color;
      ctx.beginPath(); // the wick: high to low
      ctx.moveTo(Math.round(x) + 0.5, y(bar.high));
      ctx.lineTo(Math.round(x) + 0.5, y(bar.low));
      ctx.stroke();
      const top = y(Math.max(bar.open, bar.close));
      const bottom = y(Math.min(bar.open, bar.close));
      ctx.fillRect(Math.round(x - slot * 0.35), top, Math.round(slot * 0.7), Math.max(1, bottom - top));
      if ((bars.length - 1 - i) % 12 === 0) { // a time label every 12 candles, UTC
        ctx.fillStyle = "#59636e";
        ctx.fillText(bar.ts.slice(11, 16), x - 14, height - 8);
      }
    });
    $("last-close").textContent = bars[bars.length - 1].close.toFixed(digits);
  }

  $("interval").textContent = `${interval}, times in UTC`;
  $("symbol").addEventListener("change", (event) => {
    params.set("symbol", event.target.value);
    location.search = params.toString(); // a new page: a URL to share, no state to unwind
  });
  window.addEventListener("resize", scheduleDraw);
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_ITEM, $("key-input").value.trim());
    params.delete("api_key");
    location.search = params.toString();
  });
  if (!apiKey) {
    showProblem("No API key: type the read key below, or open this page as /?api_key=<key>.");
    $("key-form").hidden = false;
  }
  scheduleDraw();
  refreshStatus();
})();
