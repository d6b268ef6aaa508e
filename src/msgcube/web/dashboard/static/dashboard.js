/* msgcube dashboard: fetches served rows, draws them with plotly.js, fills the tables.
 *
 * Every number comes from /dashboard/api/rows/<endpoint>, whose "list" is exactly what the
 * datacube API serves. This script only adds rows up for display:
 *   消息发送次数 = Σ msg_count (of the chosen type, or of all types);
 *   消息发送人数 = msg_user of the chosen type, or, for all types, Σ msg_user over
 *                 count_interval 1–3 of the distribution (distinct senders; adding msg_user
 *                 over types would count a sender of text and images twice);
 *   人均发送次数 = 次数 / 人数.
 * Each panel's element gets data-state="loading|ready|empty|error" (the tests wait on it).
 */
(function () {
  "use strict";

  var cfg = JSON.parse(document.getElementById("dashboard-config").textContent);
  var T = cfg.text;
  var form = document.getElementById("filters");
  var TYPE_CODES = Object.keys(cfg.types).map(Number);
  var INTERVAL_CODES = Object.keys(cfg.intervals).map(Number);
  var TYPE_COLORS = { 1: "#1a7f37", 2: "#0969da", 3: "#9a6700", 4: "#8250df", 6: "#cf222e" };
  var INTERVAL_COLORS = { 0: "#8c959f", 1: "#54aeff", 2: "#0969da", 3: "#0a3069" };
  var METRIC_COLOR = "#07783a";
  var locale = cfg.lang === "zh" ? "zh-CN" : "en";
  var intFmt = new Intl.NumberFormat(locale, { maximumFractionDigits: 0 });
  var ratioFmt = new Intl.NumberFormat(locale, { minimumFractionDigits: 2, maximumFractionDigits: 2 });

  var data = { trend: null, hour: null };
  var seq = { trend: 0, hour: 0 };
  var lastPeriod = null;

  function $(id) { return document.getElementById(id); }

  function hourLabel(h) { return (h < 10 ? "0" : "") + h + ":00"; }

  function state() {
    var fd = new FormData(form);
    return {
      period: String(fd.get("period") || "day"),
      msgType: String(fd.get("msg_type") || ""),
      begin: String(fd.get("begin") || ""),
      end: String(fd.get("end") || ""),
      metric: String(fd.get("metric") || "msg_user"),
      day: String(fd.get("day") || ""),
    };
  }

  function syncUrl(s) {
    var params = new URLSearchParams({
      period: s.period, msg_type: s.msgType, begin: s.begin, end: s.end,
      metric: s.metric, day: s.day,
    });
    var url = location.pathname + "?" + params.toString();
    history.replaceState(null, "", url);
    var next = $("language-next");
    if (next) next.value = url;
  }

  function rowsUrl(base, name, begin, end, msgType) {
    var params = new URLSearchParams({ begin: begin, end: end });
    if (msgType) params.set("msg_type", msgType);
    return base + encodeURIComponent(name) + (base === cfg.csv ? ".csv" : "") + "?" + params;
  }

  function fetchRows(name, begin, end) {
    return fetch(rowsUrl(cfg.api, name, begin, end), {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    }).then(function (response) {
      return response.json().catch(function () { return { errcode: response.status }; })
        .then(function (body) {
          if (!response.ok || body.errcode) {
            var err = new Error(errorText(body));
            err.body = body;
            throw err;
          }
          return body;
        });
    });
  }

  function errorText(body) {
    var known = T["err_" + body.errcode];
    var text = known || body.errmsg || String(body.errcode);
    return T.error.replace("{msg}", body.detail ? text + " (" + body.detail + ")" : text);
  }

  function fmt(value, metric) {
    if (value === null || value === undefined) return "—";
    return metric === "per_user" ? ratioFmt.format(value) : intFmt.format(value);
  }

  function setStatus(panel, stateName, message) {
    var el = $(panel + "-status");
    $(panel + "-panel").dataset.state = stateName;
    el.textContent = message || "";
    el.classList.toggle("error", stateName === "error");
    $(panel + "-chart").classList.toggle("hidden", stateName !== "ready");
  }

  /* ------------------------------------------------------------------ series */

  function sum(rows, field) {
    return rows.reduce(function (acc, r) { return acc + r[field]; }, 0);
  }

  function measure(metric, users, count) {
    if (metric === "msg_user") return users;
    if (metric === "msg_count") return count;
    return users ? count / users : null;
  }

  function trendSeries(s) {
    var summary = data.trend.summary, dist = data.trend.dist;
    var type = s.msgType ? Number(s.msgType) : null;
    var periods = summary.periods;
    return periods.map(function (p) {
      var rows = summary.list.filter(function (r) {
        return r.ref_date === p && (type === null || r.msg_type === type);
      });
      var count = sum(rows, "msg_count");
      var users = type === null
        ? sum(dist.list.filter(function (r) { return r.ref_date === p && r.count_interval > 0; }), "msg_user")
        : sum(rows, "msg_user");
      return { x: p, y: measure(s.metric, users, count) };
    });
  }

  /* ------------------------------------------------------------------ charts */

  function baseLayout(yFormat) {
    var font = getComputedStyle(document.body).fontFamily;
    return {
      height: 340,
      margin: { t: 12, r: 12, b: 48, l: 56 },
      font: { family: font, size: 13, color: "#1f2328" },
      paper_bgcolor: "#ffffff",
      plot_bgcolor: "#ffffff",
      hovermode: "x unified",
      separators: ".,",
      yaxis: { rangemode: "tozero", gridcolor: "#e5e7eb", zerolinecolor: "#8c959f",
               tickformat: yFormat, automargin: true },
      legend: { orientation: "h", x: 0, y: -0.18 },
    };
  }

  var PLOT_CONFIG = { displayModeBar: false, responsive: true };

  function dateAxis(period, labels) {
    if (period === "day") {
      return { type: "date", tickformat: "%m-%d", hoverformat: "%Y-%m-%d",
               gridcolor: "#f0f2f4", automargin: true };
    }
    // Weeks and months are labelled by their first day: tick exactly those labels (a date
    // axis would put week ticks on Sundays), thinned to about a dozen.
    var every = Math.max(1, Math.ceil(labels.length / 12));
    var ticks = labels.filter(function (_label, i) { return i % every === 0; });
    return {
      type: "category",
      tickvals: ticks,
      ticktext: ticks.map(function (d) { return period === "month" ? d.slice(0, 7) : d.slice(5); }),
      gridcolor: "#f0f2f4",
      automargin: true,
    };
  }

  function renderTrend() {
    if (!data.trend) return;
    var s = state();
    var series = trendSeries(s);
    var hasRows = data.trend.summary.list.length > 0 || data.trend.dist.list.length > 0;
    fillTrendTable(s);
    setCsv("trend-csv", cfg.summary[data.trend.period], data.trend, s.msgType);
    if (!hasRows) {
      Plotly.purge($("trend-chart"));
      setStatus("trend", "empty", T.no_data);
      return;
    }
    var name = T[s.metric] + " · " + (s.msgType ? cfg.types[s.msgType] : T.all_types);
    var trace = {
      type: "scatter",
      mode: series.length > 60 ? "lines" : "lines+markers",
      x: series.map(function (p) { return p.x; }),
      y: series.map(function (p) { return p.y; }),
      name: name,
      line: { color: METRIC_COLOR, width: 2 },
      marker: { size: 6 },
      hovertemplate: "%{y:" + (s.metric === "per_user" ? ".2f" : ",d") + "}<extra>" + name + "</extra>",
    };
    var layout = baseLayout(s.metric === "per_user" ? ".2f" : ",d");
    layout.xaxis = dateAxis(data.trend.period, trace.x);
    layout.showlegend = true;
    setStatus("trend", "ready", data.trend.summary.not_ready ? T.not_ready.replace("{time}", cfg.ready_at) : "");
    $("trend-chart").setAttribute("aria-label", name);
    Plotly.react($("trend-chart"), [trace], layout, PLOT_CONFIG);
  }

  function renderHour() {
    if (!data.hour) return;
    var s = state();
    var body = data.hour.body;
    var types = s.msgType ? [Number(s.msgType)] : TYPE_CODES;
    var hours = [];
    for (var h = 0; h < 24; h++) hours.push(h);
    var labels = hours.map(hourLabel);
    fillHourTable(s);
    setCsv("hour-csv", cfg.hour, { begin: data.hour.day, end: data.hour.day }, s.msgType);
    if (!body.list.length) {
      Plotly.purge($("hour-chart"));
      setStatus("hour", "empty", body.not_ready ? T.not_ready.replace("{time}", cfg.ready_at) : T.no_data);
      return;
    }
    var traces = types.map(function (code) {
      var y = hours.map(function (h) {
        var row = body.list.find(function (r) { return r.ref_hour === h * 100 && r.msg_type === code; });
        return measure(s.metric, row ? row.msg_user : 0, row ? row.msg_count : 0);
      });
      var trace = {
        x: labels, y: y, name: cfg.types[String(code)],
        hovertemplate: "%{y:" + (s.metric === "per_user" ? ".2f" : ",d") + "}<extra>" + cfg.types[String(code)] + "</extra>",
      };
      if (s.metric === "per_user") {
        trace.type = "scatter";
        trace.mode = "lines+markers";
        trace.connectgaps = false;
        trace.line = { color: TYPE_COLORS[code] };
      } else {
        trace.type = "bar";
        trace.marker = { color: TYPE_COLORS[code] };
      }
      return trace;
    });
    var layout = baseLayout(s.metric === "per_user" ? ".2f" : ",d");
    layout.barmode = s.metric === "msg_count" ? "stack" : "group";
    layout.showlegend = true;
    setStatus("hour", "ready", "");  // shown before measuring its width
    var step = $("hour-chart").clientWidth < 560 ? 4 : 2;
    var ticks = labels.filter(function (_label, h) { return h % step === 0; });
    layout.xaxis = { type: "category", tickangle: 0, tickvals: ticks, ticktext: ticks, automargin: true };
    $("hour-chart").setAttribute("aria-label", T[s.metric] + " · " + data.hour.day);
    Plotly.react($("hour-chart"), traces, layout, PLOT_CONFIG);
  }

  function renderDist() {
    if (!data.trend) return;
    var dist = data.trend.dist;
    fillDistTable();
    setCsv("dist-csv", cfg.dist[data.trend.period], data.trend, "");
    if (!dist.list.length) {
      Plotly.purge($("dist-chart"));
      setStatus("dist", "empty", T.no_data);
      return;
    }
    var present = INTERVAL_CODES.filter(function (c) {
      return dist.list.some(function (r) { return r.count_interval === c; });
    });
    var traces = present.map(function (code) {
      var label = cfg.intervals[String(code)];
      return {
        type: "bar",
        name: label,
        x: dist.periods,
        y: dist.periods.map(function (p) {
          var row = dist.list.find(function (r) { return r.ref_date === p && r.count_interval === code; });
          return row ? row.msg_user : 0;
        }),
        marker: { color: INTERVAL_COLORS[code] },
        hovertemplate: "%{y:,d}<extra>" + label + "</extra>",
        // Silent followers dwarf the senders: listed, drawn when their legend entry is clicked.
        visible: code === 0 ? "legendonly" : true,
      };
    });
    var layout = baseLayout(",d");
    layout.xaxis = dateAxis(data.trend.period, dist.periods);
    layout.barmode = "stack";
    layout.showlegend = true;
    setStatus("dist", "ready", "");
    Plotly.react($("dist-chart"), traces, layout, PLOT_CONFIG);
  }

  /* ------------------------------------------------------------------ tables */

  function fillTable(id, headers, rows, cells) {
    var table = $(id);
    var thead = table.tHead, tbody = table.tBodies[0];
    thead.textContent = "";
    tbody.textContent = "";
    var tr = document.createElement("tr");
    var numeric = headers.map(function (h) { return h === T.msg_user || h === T.msg_count; });
    headers.forEach(function (h, i) {
      var th = document.createElement("th");
      th.scope = "col";
      th.textContent = h;
      if (numeric[i]) th.className = "num";
      tr.appendChild(th);
    });
    thead.appendChild(tr);
    var fragment = document.createDocumentFragment();
    rows.forEach(function (row) {
      var line = document.createElement("tr");
      line.dataset.row = JSON.stringify(row);
      cells(row).forEach(function (value, i) {
        var td = document.createElement(i === 0 ? "th" : "td");
        if (i === 0) td.scope = "row";
        if (numeric[i]) td.className = "num";
        td.textContent = value;
        line.appendChild(td);
      });
      fragment.appendChild(line);
    });
    tbody.appendChild(fragment);
  }

  function typeFilter(msgType) {
    return function (r) { return !msgType || r.msg_type === Number(msgType); };
  }

  function fillTrendTable(s) {
    var rows = data.trend.summary.list.filter(typeFilter(s.msgType));
    fillTable("trend-table", [T.ref_date, T.msg_type, T.msg_user, T.msg_count], rows, function (r) {
      return [r.ref_date, cfg.types[String(r.msg_type)] || String(r.msg_type),
              intFmt.format(r.msg_user), intFmt.format(r.msg_count)];
    });
  }

  function fillHourTable(s) {
    var rows = data.hour.body.list.filter(typeFilter(s.msgType));
    fillTable("hour-table", [T.ref_date, T.hour, T.msg_type, T.msg_user, T.msg_count], rows, function (r) {
      return [r.ref_date, hourLabel(r.ref_hour / 100), cfg.types[String(r.msg_type)] || String(r.msg_type),
              intFmt.format(r.msg_user), intFmt.format(r.msg_count)];
    });
  }

  function fillDistTable() {
    fillTable("dist-table", [T.ref_date, T.count_interval, T.msg_user], data.trend.dist.list, function (r) {
      return [r.ref_date, cfg.intervals[String(r.count_interval)] || String(r.count_interval),
              intFmt.format(r.msg_user)];
    });
  }

  function setCsv(id, endpoint, range, msgType) {
    $(id).href = rowsUrl(cfg.csv, endpoint, range.begin, range.end, msgType);
  }

  /* ------------------------------------------------------------------ loading */

  function loadRange() {
    var s = state();
    var mine = ++seq.trend;
    ["trend", "dist"].forEach(function (p) { setStatus(p, "loading", T.loading); });
    return Promise.all([
      fetchRows(cfg.summary[s.period], s.begin, s.end),
      fetchRows(cfg.dist[s.period], s.begin, s.end),
    ]).then(function (bodies) {
      if (mine !== seq.trend) return;
      data.trend = { period: s.period, begin: s.begin, end: s.end, summary: bodies[0], dist: bodies[1] };
      renderTrend();
      renderDist();
    }).catch(function (err) {
      if (mine !== seq.trend) return;
      data.trend = null;
      ["trend", "dist"].forEach(function (p) {
        Plotly.purge($(p + "-chart"));
        setStatus(p, "error", err.message);
      });
    });
  }

  function loadHour() {
    var s = state();
    var mine = ++seq.hour;
    setStatus("hour", "loading", T.loading);
    return fetchRows(cfg.hour, s.day, s.day).then(function (body) {
      if (mine !== seq.hour) return;
      data.hour = { day: s.day, body: body };
      renderHour();
    }).catch(function (err) {
      if (mine !== seq.hour) return;
      data.hour = null;
      Plotly.purge($("hour-chart"));
      setStatus("hour", "error", err.message);
    });
  }

  function loadAll() {
    syncUrl(state());
    return Promise.all([loadRange(), loadHour()]);
  }

  /* ------------------------------------------------------------------ events */

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    loadAll();
  });

  $("f-period").addEventListener("change", function () {
    var s = state();
    var old = cfg.defaults[lastPeriod];
    if (old && s.begin === old[0] && s.end === old[1]) {
      $("f-begin").value = cfg.defaults[s.period][0];
      $("f-end").value = cfg.defaults[s.period][1];
    }
    lastPeriod = s.period;
    syncUrl(state());
    loadRange();
  });

  $("f-type").addEventListener("change", function () {
    syncUrl(state());
    renderTrend();
    renderHour();
  });

  Array.prototype.forEach.call(document.querySelectorAll('input[name="metric"]'), function (input) {
    input.addEventListener("change", function () {
      syncUrl(state());
      renderTrend();
      renderHour();
    });
  });

  $("f-day").addEventListener("change", function () {
    if (!$("f-day").checkValidity()) return;
    syncUrl(state());
    loadHour();
  });

  lastPeriod = state().period;
  loadAll();
})();
