/* isostack's dual-axis view. One script for the live UI (data over /api/*) and the self-contained
 * report (data embedded as window.ISOSTACK.data). It renders what the product diagnosed and holds no
 * diagnosis logic: verdict, chains, evidence and join bases come from `isostack diagnose --json`.
 * DOM text is always set with textContent (span names and attributes are untrusted input). */
(function () {
  'use strict';
  var CFG = window.ISOSTACK || {mode: 'live', api: 'api'};
  var LANES = ['L-4', 'L-3', 'L-2', 'L-1', 'L-0', 'HOST', 'NET'];
  var STACK = [['APP', 'application (the service\'s own code)'],
    ['L-4', 'sandbox: gVisor · Firecracker · Kata · WASM'],
    ['L-3', 'container: cgroups · namespaces · seccomp · veth · conntrack'],
    ['L-2', 'paravirtual: virtio · Xen PV'],
    ['L-1', 'full virtualisation: KVM · QEMU · ESXi'],
    ['L-0', 'hardware assist: VT-x · EPT · SEV'],
    ['HOST', 'host: disks · NICs · CPUs']];
  var PAGE = 50;
  var PALETTE = ['#d32f2f', '#1976d2', '#388e3c', '#f57c00', '#7b1fa2', '#0097a7', '#5d4037', '#c2185b',
    '#455a64', '#afb42b', '#512da8', '#00796b', '#e64a19', '#303f9f', '#689f38', '#fbc02d'];
  var state = {sort: 'time', sortDesc: false, incidents: null, trace: null, diag: null, finding: null, kinds: null, text: '', page: 0,
    xy: null, map: null, spanRows: []};

  function el(tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (k === 'text') e.textContent = attrs[k];
        else if (k === 'cls') e.className = attrs[k];
        else if (k === 'on') Object.keys(attrs.on).forEach(function (ev) { e.addEventListener(ev, attrs.on[ev]); });
        else if (attrs[k] !== null && attrs[k] !== undefined) e.setAttribute(k, attrs[k]);
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      e.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  function $(id) { return document.getElementById(id); }
  function ms(ns) { return ns / 1e6; }
  function fmt(x) {  // 3 significant digits, no exponent
    var a = Math.abs(x);
    return a >= 100 ? x.toFixed(0) : a >= 10 ? x.toFixed(1) : x.toFixed(2);
  }
  function human(ns) {
    var a = Math.abs(ns);
    if (a >= 1e9) return fmt(ns / 1e9) + ' s';
    if (a >= 1e6) return fmt(ns / 1e6) + ' ms';
    if (a >= 1e3) return fmt(ns / 1e3) + ' µs';
    return Math.round(ns) + ' ns';
  }
  function offset(ns) { return (ns < 0 ? '−' : '+') + human(Math.abs(ns)); }
  function axisMs(v) { return Math.abs(v) >= 1000 ? fmt(v / 1000) + ' s' : fmt(v) + ' ms'; }
  function colour(kind) {
    var h = 0;
    for (var i = 0; i < kind.length; i++) h = (h * 31 + kind.charCodeAt(i)) >>> 0;
    return PALETTE[h % PALETTE.length];
  }
  function basisClass(b) { return 'basis ' + (/recover/.test(b || '') ? 'recovered' : (!b || b === 'none' ? 'none' : '')); }

  // ---- data access: the only place that knows live vs static ------------------------------------------
  function getJSON(path) {
    return fetch(CFG.api + path).then(function (r) {
      if (!r.ok) return r.text().then(function (t) { throw new Error(r.status + ' ' + t); });
      return r.json();
    });
  }
  function loadIncidents() {
    if (CFG.mode === 'static') return Promise.resolve(CFG.data);
    // a link may pin the range (?since=…&until=…, as `isostack diagnose` takes them)
    var pinned = new URLSearchParams(window.location.search);
    if (pinned.get('since') || pinned.get('until')) {
      var q = new URLSearchParams();
      ['since', 'until'].forEach(function (k) { if (pinned.get(k)) q.set(k, pinned.get(k)); });
      return getJSON('/incidents?' + q.toString());
    }
    var w = $('window-select') ? $('window-select').value : '15m';
    return getJSON('/incidents?window=' + encodeURIComponent(w));
  }
  function loadTrace(traceId, incident) {
    if (!traceId) {  // an unavailable service: no trace, only its chain and the events joined to it
      var ev = (state.incidents.orphan_events || {})[String(incident.idx)];
      var events = {}; if (ev) events['0'] = ev;
      var d = Object.assign({}, incident, {idx: 0});
      return Promise.resolve({trace_id: '', spans: [], diagnoses: [d], events: events});
    }
    if (CFG.mode === 'static') return Promise.resolve(CFG.data.traces[traceId]);
    return getJSON('/trace/' + encodeURIComponent(traceId));
  }

  // ---- controls ------------------------------------------------------------------------------------
  function renderControls() {
    var c = clear($('controls'));
    if (CFG.mode === 'static') {
      c.appendChild(el('span', {text: 'report generated ' + (CFG.generated || '') + ' · self-contained, no network'}));
      return;
    }
    var pinned = new URLSearchParams(window.location.search);
    if (pinned.get('since') || pinned.get('until')) {
      c.appendChild(el('span', {text: 'range ' + (pinned.get('since') || '…') + ' – ' + (pinned.get('until') || 'now')}));
      c.appendChild(el('button', {id: 'refresh', text: 'refresh', on: {click: refresh}}));
      return;
    }
    var sel = el('select', {id: 'window-select', 'aria-label': 'time window'});
    ['5m', '15m', '1h', '6h', '24h', 'all'].forEach(function (w) {
      var o = el('option', {value: w, text: 'last ' + w}); if (w === (CFG.window || '15m')) o.selected = true; sel.appendChild(o);
    });
    sel.addEventListener('change', refresh);
    c.appendChild(el('label', {text: 'window '}, sel));
    c.appendChild(el('button', {id: 'refresh', text: 'refresh', on: {click: refresh}}));
  }

  // ---- verdict + incidents ------------------------------------------------------------------------
  function mechanismTitles(data) {
    var t = {};
    (data.incidents || []).forEach(function (d) { (d.chain || []).forEach(function (f) { t[f.mechanism] = f.title; }); });
    return t;
  }

  // The product's incident verdict (locate/verdict.py, `diagnose --json` .verdict): ranked candidates,
  // each a place (service, host or device), layer and mechanism with its share of the slow hops' excess.
  function renderVerdict(data) {
    var box = clear($('verdict'));
    var v = data.verdict;
    var titles = mechanismTitles(data);
    var incidents = (data.incidents || []).filter(function (d) { return d.slow_hop; });
    var rows = data.store_rows;
    if (rows && (!rows.spans || !rows.kernel_events)) {  // a new store: say what feeds it
      box.className = 'ok';
      box.appendChild(el('div', {cls: 'answer', id: 'verdict-answer', text: !rows.spans
        ? 'No spans in the store yet.' : 'Spans arrive, but no kernel events yet.'}));
      box.appendChild(el('div', {text: !rows.spans
        ? 'Point an OpenTelemetry SDK or Collector at this receiver (OTEL_EXPORTER_OTLP_ENDPOINT=http://<this host>:4318), ' +
          'or load files with `isostack ingest traces.json`.'
        : 'Run `sudo isostack agent` on each node (eBPF tracepoints and cgroup counters): without it isostack finds the slow ' +
          'hop but cannot name the layer under it.'}));
      if (!rows.spans) return;
    }
    if (v && v.incident === false) {
      box.className = 'ok';
      box.appendChild(el('div', {cls: 'answer', id: 'verdict-answer', text: 'Nothing wrong beyond the noise in this window.'}));
      if (v.reference && v.reference.how) box.appendChild(el('div', {cls: 'hint', text: 'compared with ' + v.reference.how}));
    } else if (v && (v.service || v.layer)) {
      box.className = '';
      box.appendChild(el('div', {cls: 'answer', id: 'verdict-answer',
        text: 'Root cause: ' + [v.service, v.layer, titles[v.mechanism] || v.mechanism].filter(Boolean).join(' · ')}));
      if (v.reference && v.reference.how) box.appendChild(el('div', {cls: 'hint', text: 'compared with ' + v.reference.how}));
    } else if (!incidents.length) {
      box.className = 'ok';
      box.appendChild(el('p', {cls: 'answer', id: 'verdict-answer', text: 'No slow hop in this window.'}));
      var first = (data.incidents || [])[0];
      (first && first.missing || []).forEach(function (m) { box.appendChild(el('div', {cls: 'missing', text: m})); });
      return;
    } else {
      box.className = '';
      var top = incidents[0];
      box.appendChild(el('div', {cls: 'answer', id: 'verdict-answer',
        text: 'Worst slow hop: ' + top.slow_hop.service + ' → ' + (top.slow_hop.server_service || top.slow_hop.peer) +
          (top.chain_line ? ' · ' + top.chain_line : '')}));
      box.appendChild(el('div', {cls: 'hint', text: 'no incident verdict in this data: the worst hop\'s chain is shown'}));
    }
    var ol = el('ol', {id: 'verdict-candidates'});
    ((v && v.candidates) || []).slice(0, 5).forEach(function (c) {
      var share = c.share !== undefined ? ' — ' + Math.round(c.share * 100) + ' % of the slow hops\' excess' : '';
      var hops = c.hop_count ? ', ' + c.hop_count + ' hop(s)' : '';
      var symptoms = c.symptoms && c.symptoms.length ? '; symptoms: ' + c.symptoms.join(', ') : '';
      ol.appendChild(el('li', {text: [c.service, c.layer, titles[c.mechanism] || c.mechanism].filter(Boolean).join(' · ') +
        share + hops + symptoms}));
    });
    if (ol.childNodes.length) box.appendChild(ol);
  }

  function renderIncidents(data) {
    var box = clear($('incidents'));
    var rows = (data.incidents || []).filter(function (d) { return d.slow_hop; });
    if (!rows.length) { box.appendChild(el('p', {cls: 'muted', text: 'nothing slow in this window'})); return; }
    var t = el('table', {id: 'incident-table'});
    t.appendChild(el('tr', null, el('th', {text: '#'}), el('th', {text: 'hop'}), el('th', {text: 'duration'}),
      el('th', {text: 'excess'}), el('th', {text: 'root cause'})));
    rows.forEach(function (d, i) {
      var h = d.slow_hop, disp = d.display || {};
      var unavailable = !h.trace_id;
      var hop = unavailable ? 'unavailable: ' + (h.server_service || h.peer || h.service) + ' (calls from ' + h.service + ' failed)'
        : h.service + ' · ' + h.kind + ' ' + h.operation + ' → ' + (h.server_service || h.peer);
      var root = d.root_cause;
      var rootCell = el('td');
      if (root) {
        rootCell.appendChild(el('span', {cls: 'layer-tag root', text: root.layer}));
        rootCell.appendChild(document.createTextNode(' ' + (root.title || root.mechanism)));
      } else rootCell.appendChild(el('span', {cls: 'muted', text: 'no kernel signal crossed a threshold'}));
      var tr = el('tr', {cls: 'incident', 'data-trace-id': h.trace_id || '', 'data-idx': String(d.idx),
        'data-span-id': h.span_id || '', tabindex: '0',
        on: {click: function () { openIncident(d, tr); }, keydown: function (e) { if (e.key === 'Enter') openIncident(d, tr); }}},
      el('td', {cls: 'num', text: String(i + 1)}), el('td', {text: hop}),
      el('td', {cls: 'num', text: disp.duration || human(h.duration_ns)}),
      el('td', {cls: 'num', text: disp.excess || human(h.excess_ns)}), rootCell);
      t.appendChild(tr);
    });
    box.appendChild(t);
  }

  function renderMap(data) {
    var sm = data.service_map || {nodes: [], edges: []};
    if (!window.echarts) return;
    if (!state.map) state.map = echarts.init($('map'));
    var maxCalls = Math.max.apply(null, [1].concat(sm.edges.map(function (e) { return e.calls; })));
    state.map.setOption({
      tooltip: {formatter: function (p) {
        if (p.dataType === 'edge') {
          var e = p.data.raw;
          return e.source + ' → ' + e.target + '<br>' + e.calls + ' calls · p95 ' + e.p95 + ' · errors ' +
            (e.error_rate * 100).toFixed(1) + ' %' + (e.slow ? '<br><b>diagnosed slow hop</b>' : '');
        }
        return echarts.format.encodeHTML(p.name);
      }},
      series: [{
        type: 'graph', layout: 'circular', roam: true, symbolSize: 34, edgeSymbol: ['none', 'arrow'], edgeSymbolSize: 9,
        label: {show: true, position: 'bottom', fontSize: 12},
        edgeLabel: {show: true, fontSize: 10, formatter: function (p) { return p.data.raw.p95; }},
        lineStyle: {curveness: 0.15},
        data: sm.nodes.map(function (n) { return {name: n.name, itemStyle: {color: n.name === 'clients' ? '#90a4ae' : '#5b8def'}}; }),
        links: sm.edges.map(function (e) {
          return {source: e.source, target: e.target, raw: e, lineStyle: {
            width: 1 + 4 * e.calls / maxCalls, color: e.slow ? '#c62828' : (e.error_rate > 0.01 ? '#f57c00' : '#90a4ae')}};
        })
      }]
    }, true);
  }

  function refresh() {
    $('verdict').firstChild && ($('verdict').className = '');
    return loadIncidents().then(function (data) {
      state.incidents = data;
      CFG.generated = CFG.generated || data.generated;
      renderVerdict(data); renderIncidents(data); renderMap(data);
      document.body.setAttribute('data-loaded', 'incidents');
      // a link from elsewhere (a Grafana data link, a ticket) may name one trace: open it
      var tid = CFG.mode === 'live' ? new URLSearchParams(window.location.search).get('trace') : null;
      if (tid && !state.opened) {
        state.opened = true;
        return loadTrace(tid.toLowerCase(), null).then(function (trace) {
          var d = trace.diagnoses[0] || {idx: -1, chain: [], slow_hop: {trace_id: tid, service: '?', peer: '', span_id: '',
            duration_ns: 0, excess_ns: 0, start_ns: 0, end_ns: 0}};
          state.trace = trace; renderTrace(trace, d);
          document.body.setAttribute('data-loaded', 'trace');
        });
      }
    }).catch(function (e) {
      clear($('verdict')).appendChild(el('p', {cls: 'error', text: 'could not load: ' + e.message}));
    });
  }

  // ---- one trace: waterfall (X) over the isolation-stack lanes (Y) on one time axis --------------------
  function openIncident(d, tr) {
    Array.prototype.forEach.call(document.querySelectorAll('tr.incident.selected'), function (r) { r.classList.remove('selected'); });
    if (tr) tr.classList.add('selected');
    return loadTrace(d.slow_hop.trace_id, d).then(function (trace) {
      state.trace = trace;
      renderTrace(trace, d);
      if (!d.slow_hop.trace_id) selectDiagnosis(trace.diagnoses[0]);  // nothing to click on a missing trace
      document.body.setAttribute('data-loaded', 'trace');
    }).catch(function (e) {
      $('trace-box').hidden = false;
      clear($('xy')).appendChild(el('p', {cls: 'error', text: 'could not load the trace: ' + e.message}));
    });
  }

  function slowSpanIds(trace) {
    var out = {};
    trace.diagnoses.forEach(function (d) {
      var h = d.slow_hop; if (!h) return;
      if (h.span_id) out[h.span_id] = d;
      if (h.server_span_id) out[h.server_span_id] = d;
    });
    return out;
  }

  function depthOf(spans) {
    var parent = {}, depth = {};
    spans.forEach(function (s) { parent[s.span_id] = s.parent_span_id || ''; });
    spans.forEach(function (s) {
      var d = 0, cur = parent[s.span_id], seen = {};
      while (cur && parent.hasOwnProperty(cur) && !seen[cur]) { seen[cur] = 1; d++; cur = parent[cur]; }
      depth[s.span_id] = d;
    });
    return depth;
  }

  function renderTrace(trace, incident) {
    $('trace-box').hidden = false;
    var h = incident.slow_hop;
    $('trace-title').textContent = h.trace_id ? 'Trace ' + h.trace_id + ' · ' + trace.spans.length + ' spans'
      : 'No trace: ' + (h.server_service || h.peer) + ' did not answer';
    var slow = slowSpanIds(trace);
    var spans = trace.spans.slice();
    var allEvents = [];
    Object.keys(trace.events || {}).forEach(function (k) { allEvents = allEvents.concat(trace.events[k].events || []); });
    // time 0 is the trace's first span; windowed kernel rows that began earlier sit left of it
    var t0 = Infinity, t1 = -Infinity, lo = Infinity;
    spans.forEach(function (s) { t0 = Math.min(t0, s.start_ns); t1 = Math.max(t1, s.end_ns); });
    if (!spans.length) { t0 = h.start_ns; t1 = h.end_ns; }
    lo = t0;
    allEvents.forEach(function (e) { lo = Math.min(lo, e.ts_ns); t1 = Math.max(t1, e.ts_ns + e.duration_ns); });
    if (!isFinite(t0)) { t0 = 0; t1 = 1; lo = 0; }
    state.t0 = t0;
    var depth = depthOf(spans);
    spans.sort(function (a, b) { return a.start_ns - b.start_ns || depth[a.span_id] - depth[b.span_id]; });
    state.spanRows = spans;
    var labels = spans.map(function (s) {
      return '\u2002'.repeat(Math.min(depth[s.span_id] || 0, 8)) + (s.service_name || '?') + ': ' + (s.name || '');
    });
    var spanData = spans.map(function (s, i) {
      return {value: [ms(s.start_ns - t0), ms(s.end_ns - t0), i], span: s, slow: !!slow[s.span_id]};
    });
    // Y: one row per (layer, kind) so kinds never hide each other; a layer with nothing joined keeps
    // an empty row, which is an answer too ("nothing seen in L-1")
    var laneRows = [], laneIndex = {}, maxByKind = {};
    LANES.forEach(function (l) {
      var ks = {};
      allEvents.forEach(function (e) { if (e.lane === l) ks[e.kind] = 1; });
      var names = Object.keys(ks).sort();
      if (!names.length) { laneRows.push({lane: l, label: (l === 'NET' ? 'NET slice' : l) + '  —'}); return; }
      names.forEach(function (k) { laneIndex[l + '|' + k] = laneRows.length; laneRows.push({lane: l, kind: k, label: (l === 'NET' ? 'NET slice' : l) + '  ' + k}); });
    });
    allEvents.forEach(function (e) { maxByKind[e.kind] = Math.max(maxByKind[e.kind] || 0, Math.abs(e.value || 0)); });
    var laneData = allEvents.map(function (e) {
      var rel = maxByKind[e.kind] ? Math.abs(e.value || 0) / maxByKind[e.kind] : 1;
      return {value: [ms(e.ts_ns - t0), ms(e.ts_ns + e.duration_ns - t0), laneIndex[e.lane + '|' + e.kind]], ev: e,
        rel: rel};
    });
    var kinds = {};
    allEvents.forEach(function (e) { kinds[e.kind] = (kinds[e.kind] || 0) + 1; });
    var legend = clear($('kinds-legend'));
    Object.keys(kinds).sort().forEach(function (k) {
      legend.appendChild(el('span', {style: '--c:' + colour(k), text: k + ' (' + kinds[k] + ')'}));
    });
    var rowH = 22, spanH = Math.max(60, rowH * spans.length), laneH = rowH * laneRows.length;
    var top = 10, gap = 36;
    $('xy').style.height = (top + spanH + gap + laneH + 70) + 'px';
    if (!state.xy) {
      state.xy = echarts.init($('xy'));
      state.xy.on('click', function (p) {
        if (p.seriesId === 'spans') selectSpan(p.data.span.span_id);
        else if (p.seriesId === 'events') selectEventKind(p.data.ev.kind);
      });
    } else state.xy.resize();
    var span = (t1 - t0) / 1e6, xmin = (lo - t0) / 1e6;
    function bar(params, api) {
      var s = api.coord([api.value(0), api.value(2)]), e = api.coord([api.value(1), api.value(2)]);
      var hgt = api.size([0, 1])[1] * 0.62;
      var w = Math.max(e[0] - s[0], 3);
      return {type: 'rect', shape: echarts.graphic.clipRectByRect({x: s[0], y: s[1] - hgt / 2, width: w, height: hgt},
        {x: params.coordSys.x, y: params.coordSys.y, width: params.coordSys.width, height: params.coordSys.height}),
        style: api.style()};
    }
    state.xy.setOption({
      animation: false,
      tooltip: {confine: true, formatter: function (p) {
        var enc = echarts.format.encodeHTML;
        if (p.seriesId === 'spans') {
          var s = p.data.span;
          return enc(s.service_name + ': ' + s.name) + '<br>' + enc(s.kind + ' · ' + s.duration + ' · ' + (s.status_code || '')) +
            (p.data.slow ? '<br><b>slow hop — click for its chain</b>' : '');
        }
        var e = p.data.ev;
        return enc(e.kind + ' = ' + e.display) + '<br>' + enc(e.lane + ' · ' + (e.where || '')) + '<br>' +
          enc('at +' + human(e.ts_ns - state.t0) + (e.duration_ns ? ' for ' + human(e.duration_ns) : '') +
          ' · joined by ' + (e.join_basis || e.coord) + (e.side ? ' (' + e.side + ' side)' : ''));
      }},
      grid: [{left: 250, right: 30, top: top, height: spanH}, {left: 250, right: 30, top: top + spanH + gap, height: laneH}],
      xAxis: [{gridIndex: 0, type: 'value', min: xmin, max: span, axisLabel: {formatter: axisMs, showMaxLabel: false}},
        {gridIndex: 1, type: 'value', min: xmin, max: span, axisLabel: {formatter: axisMs, showMaxLabel: false},
          name: 'time since the trace began', nameLocation: 'middle', nameGap: 26}],
      yAxis: [{gridIndex: 0, type: 'category', data: labels, inverse: true,
        axisLabel: {width: 230, overflow: 'truncate', fontSize: 11}},
      {gridIndex: 1, type: 'category', data: laneRows.map(function (r) { return r.label; }), inverse: true,
        axisLabel: {fontSize: 11, width: 230, overflow: 'truncate'}, splitArea: {show: true}}],
      dataZoom: [{type: 'inside', xAxisIndex: [0, 1], filterMode: 'weakFilter'},
        {type: 'slider', xAxisIndex: [0, 1], filterMode: 'weakFilter', height: 16, bottom: 4}],
      series: [
        {id: 'spans', type: 'custom', xAxisIndex: 0, yAxisIndex: 0, renderItem: bar, encode: {x: [0, 1], y: 2},
          data: spanData.map(function (d) {
            d.itemStyle = {color: d.slow ? '#c62828' : '#8ab4f8'}; return d;
          })},
        {id: 'events', type: 'custom', xAxisIndex: 1, yAxisIndex: 1, renderItem: bar, encode: {x: [0, 1], y: 2},
          data: laneData.map(function (d) { d.itemStyle = {color: colour(d.ev.kind), opacity: 0.3 + 0.7 * d.rel}; return d; })}
      ]
    }, true);
    // the chain and events panels follow a span click; start on the incident's own span
    $('chain-box').hidden = true; $('stack-box').hidden = true; $('events-box').hidden = true;
  }

  function selectSpan(spanId) {
    var d = slowSpanIds(state.trace)[spanId];
    if (!d) {
      $('chain-box').hidden = false; $('stack-box').hidden = true; $('events-box').hidden = true;
      clear($('chain')).appendChild(el('p', {cls: 'muted',
        text: 'This span was not diagnosed as slow: pick a red span.'}));
      return;
    }
    selectDiagnosis(d);
  }

  // ---- the chain of one slow hop ---------------------------------------------------------------------
  function evidenceText(e) {
    var parts = [e.signal + ' ' + (e.display || (e.value + ' ' + e.unit))];
    if (e.threshold !== null && e.threshold !== undefined) parts.push('threshold ' + e.threshold);
    if (e.event_count) parts.push(e.event_count + ' events');
    if (e.coverage !== null && e.coverage !== undefined) parts.push('covers ' + Math.round(e.coverage * 100) + ' % of the span');
    if (e.where) parts.push(e.where);
    return parts.join(' · ');
  }

  function selectDiagnosis(d) {
    state.diag = d; state.finding = null;
    $('chain-box').hidden = false; $('stack-box').hidden = false;
    var h = d.slow_hop;
    $('chain-title').textContent = 'Root-cause chain · ' + h.service + ' → ' + (h.server_service || h.peer) + ' · ' +
      ((d.display || {}).duration || human(h.duration_ns));
    var box = clear($('chain'));
    if (d.chain_line) box.appendChild(el('p', {cls: 'evidence', id: 'chain-line', text: d.chain_line}));
    var basis = d.join_basis || (d.slow_hop && d.slow_hop.join_basis);
    if (basis) {
      var b = typeof basis === 'string' ? basis : (basis.basis || basis.kind || JSON.stringify(basis));
      box.appendChild(el('p', null, 'connection joined by ', el('span', {cls: basisClass(b), text: b}),
        typeof basis === 'object' && basis.candidates ? ' (' + basis.candidates + ' candidate connections)' : ''));
    }
    if (!d.chain.length) {
      box.appendChild(el('p', {text: 'Nothing found for this hop: no kernel signal crossed a threshold.'}));
    }
    var linked = d.chain.filter(function (f, i) { return i === 0 || f.caused_by; });
    var also = d.chain.filter(function (f, i) { return i > 0 && !f.caused_by; });
    function findingItem(f, i) {
      var li = el('li', {cls: 'finding', 'data-layer': f.layer, 'data-mechanism': f.mechanism, tabindex: '0',
        on: {click: function () { selectFinding(f, li); }, keydown: function (e) { if (e.key === 'Enter') selectFinding(f, li); }}},
      el('span', {cls: 'layer-tag' + (i === 0 ? ' root' : ''), text: f.layer}), ' ',
      el('b', {text: f.title}), i === 0 ? el('span', {cls: 'hint', text: ' root cause'}) : null,
      f.caused_by ? el('span', {cls: 'hint', text: ' (symptom of ' + f.caused_by + ')'}) : null,
      el('span', {cls: 'hint', text: ' · confidence ' + Math.round(f.confidence * 100) + ' %'}),
      el('div', {text: f.summary}));
      (f.evidence || []).forEach(function (e) { li.appendChild(el('div', {cls: 'evidence', text: evidenceText(e)})); });
      li.appendChild(el('div', {cls: 'fix', text: 'fix: ' + f.fix}));
      return li;
    }
    var ol = el('ol', {cls: 'chain', id: 'chain-list'});
    linked.forEach(function (f) { ol.appendChild(findingItem(f, d.chain.indexOf(f))); });
    box.appendChild(ol);
    if (also.length) {
      var ol2 = el('ol', {cls: 'chain'});
      also.forEach(function (f) { ol2.appendChild(findingItem(f, d.chain.indexOf(f))); });
      box.appendChild(el('div', {cls: 'also'}, el('b', {text: 'Also seen (not linked to the root)'}), ol2));
    }
    (d.missing || []).forEach(function (m) { box.appendChild(el('div', {cls: 'missing', text: 'missing: ' + m})); });
    renderStack(d);
    renderEvents();
  }

  function renderStack(d) {
    var implicated = {}, root = d.chain.length ? d.chain[0].layer : null;
    d.chain.forEach(function (f) { implicated[f.layer] = (implicated[f.layer] || []).concat([f.title]); });
    var box = clear($('stack')); box.className = 'stack';
    STACK.forEach(function (row) {
      var l = row[0];
      var div = el('div', {cls: 'layer' + (implicated[l] ? ' implicated' : '') + (l === root ? ' root' : ''), 'data-layer': l},
        el('b', {text: l}), ' ', el('span', {cls: 'hint', text: row[1]}));
      if (implicated[l]) div.appendChild(el('div', {text: implicated[l].join(', ')}));
      box.appendChild(div);
    });
    box.appendChild(el('div', {cls: 'net' + (implicated.NET ? ' implicated' : '') + (root === 'NET' ? ' root' : ''),
      'data-layer': 'NET', title: 'NET: the network slice through every layer' + (implicated.NET ? ' — ' + implicated.NET.join(', ') : '')}));
  }

  // ---- the raw events behind a finding: paged, filterable, human units -----------------------------------
  function hopEvents() {
    if (!state.trace || !state.diag) return {events: [], by_kind: {}, outside_span: 0};
    return (state.trace.events || {})[String(state.diag.idx)] || {events: [], by_kind: {}, outside_span: 0};
  }

  function selectFinding(f, li) {
    Array.prototype.forEach.call(document.querySelectorAll('li.finding.selected'), function (x) { x.classList.remove('selected'); });
    if (li) li.classList.add('selected');
    state.finding = f;
    var km = (state.incidents && state.incidents.kind_mechanisms) || (CFG.data && CFG.data.kind_mechanisms) || {};
    var kinds = {};
    (f.evidence || []).forEach(function (e) { kinds[e.signal] = 1; });
    Object.keys(km).forEach(function (k) { if (km[k].indexOf(f.mechanism) >= 0) kinds[k] = 1; });
    state.kinds = kinds; state.page = 0;
    renderEvents();
    $('events-box').scrollIntoView({block: 'nearest'});
  }

  function selectEventKind(kind) {
    if (!state.diag) return;
    state.kinds = {}; state.kinds[kind] = 1; state.page = 0; state.finding = null;
    renderEvents();
  }

  function renderEvents() {
    var data = hopEvents();
    $('events-box').hidden = false;
    var all = data.events || [];
    var title = state.finding ? 'Kernel events behind ' + state.finding.layer + ' ' + state.finding.title
      : 'Kernel events joined to this hop';
    $('events-title').textContent = title;
    var f = clear($('events-filters'));
    var counts = {};
    all.forEach(function (e) { counts[e.kind] = (counts[e.kind] || 0) + 1; });
    f.appendChild(el('span', {cls: 'hint', text: 'kinds: '}));
    Object.keys(counts).sort().forEach(function (k) {
      var on = !state.kinds || state.kinds[k];
      f.appendChild(el('button', {cls: 'chip' + (on && state.kinds ? ' on' : ''), 'data-kind': k, text: k + ' ' + counts[k],
        on: {click: function () {
          state.kinds = state.kinds || {};
          if (state.kinds[k]) delete state.kinds[k]; else state.kinds[k] = 1;
          if (!Object.keys(state.kinds).length) state.kinds = null;
          state.page = 0; renderEvents();
        }}}));
    });
    f.appendChild(el('button', {cls: 'chip', text: 'all', on: {click: function () { state.kinds = null; state.page = 0; renderEvents(); }}}));
    var q = el('input', {type: 'search', placeholder: 'filter (where, comm, detail…)', value: state.text,
      'aria-label': 'filter events'});
    q.addEventListener('change', function () { state.text = q.value; state.page = 0; renderEvents(); });
    f.appendChild(q);
    var rows = all.filter(function (e) {
      if (state.kinds && !state.kinds[e.kind]) return false;
      if (!state.text) return true;
      return JSON.stringify(e).toLowerCase().indexOf(state.text.toLowerCase()) >= 0;
    });
    var box = clear($('events'));
    if (!all.length) {
      box.appendChild(el('p', {cls: 'muted', text: 'No kernel events were joined to this hop (see "missing" above).'}));
      return;
    }
    var sorters = {time: function (e) { return e.ts_ns; }, value: function (e) { return e.value || 0; },
      window: function (e) { return e.duration_ns; }};
    var by = sorters[state.sort] || sorters.time, dir = state.sortDesc ? -1 : 1;
    rows.sort(function (a, b) { return dir * (by(a) - by(b)) || a.ts_ns - b.ts_ns; });
    var pages = Math.max(1, Math.ceil(rows.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    var t = el('table', {id: 'events-table'});
    function sortable(key) {
      var mark = (state.sort || 'time') === key ? (state.sortDesc ? ' ▼' : ' ▲') : '';
      return el('th', {cls: 'sortable', title: 'sort by ' + key, 'data-sort': key, text: key + mark, on: {click: function () {
        state.sortDesc = (state.sort || 'time') === key ? !state.sortDesc : key !== 'time';
        state.sort = key; state.page = 0; renderEvents();
      }}});
    }
    t.appendChild(el('tr', null, sortable('time'), el('th', {text: 'kind'}), sortable('value'),
      sortable('window'), el('th', {text: 'lane'}), el('th', {text: 'where'}), el('th', {text: 'joined by'}),
      el('th', {text: 'detail'})));
    rows.slice(state.page * PAGE, (state.page + 1) * PAGE).forEach(function (e) {
      var detail = Object.keys(e.detail || {}).slice(0, 6).map(function (k) {
        var v = e.detail[k]; return k + '=' + (typeof v === 'object' ? JSON.stringify(v) : v);
      }).join(' ');
      t.appendChild(el('tr', {cls: 'event', 'data-kind': e.kind},
        el('td', {cls: 'num', text: offset(e.ts_ns - state.t0)}), el('td', {text: e.kind}),
        el('td', {cls: 'num', text: e.display}), el('td', {cls: 'num', text: e.duration_ns ? human(e.duration_ns) : 'instant'}),
        el('td', {text: e.lane}), el('td', {text: e.where + (e.comm ? ' (' + e.comm + (e.pid ? ' ' + e.pid : '') + ')' : '')}),
        el('td', null, el('span', {cls: basisClass(e.join_basis), text: (e.join_basis || e.coord) + (e.side ? ' · ' + e.side : '')})),
        el('td', {cls: 'evidence', text: detail})));
    });
    box.appendChild(t);
    var pager = el('div', {cls: 'pager'},
      el('button', {text: '‹ prev', on: {click: function () { if (state.page > 0) { state.page--; renderEvents(); } }}}),
      el('span', {id: 'events-range', text: 'rows ' + (rows.length ? state.page * PAGE + 1 : 0) + '–' +
        Math.min(rows.length, (state.page + 1) * PAGE) + ' of ' + rows.length +
        (rows.length !== all.length ? ' (filtered from ' + all.length + ')' : '') +
        (data.outside_span ? ' · ' + data.outside_span + ' joined rows outside the span (history) not shown' : '')}),
      el('button', {text: 'next ›', on: {click: function () { if (state.page < pages - 1) { state.page++; renderEvents(); } }}}));
    box.appendChild(pager);
  }

  // for tests and scripting: where on the chart a span is drawn (client pixels)
  window.isostackUI = {
    state: state,
    spanPixel: function (spanId) {
      var i = -1;
      state.spanRows.forEach(function (s, j) { if (s.span_id === spanId) i = j; });
      if (i < 0 || !state.xy) return null;
      var s = state.spanRows[i];
      var mid = ms((s.start_ns + s.end_ns) / 2 - state.t0);
      var p = state.xy.convertToPixel({gridIndex: 0}, [mid, i]);
      var r = $('xy').getBoundingClientRect();
      return {x: p[0], y: p[1], left: r.left, top: r.top};
    }
  };

  window.addEventListener('resize', function () { if (state.xy) state.xy.resize(); if (state.map) state.map.resize(); });
  renderControls();
  refresh();
})();
