// streetwatch operations centre. Plain JS, no framework, no build step; served by the binary.
//
// Scale: 1,100 cameras and thousands of alerts. Alerts are kept in memory (a Map by id plus a sorted
// list); only the first PAGE cards are in the DOM, more as the list is scrolled; each live event
// updates one card (or one camera tile) in place. Nothing re-renders the whole list per event.
'use strict';

(() => {
  const PAGE = 200;          // cards added to the DOM at a time
  const FETCH = 500;         // alerts per API request (the API's maximum)
  const KEEP = 5000;         // alerts fetched in the background beyond what is shown
  const TOKEN_KEY = 'streetwatch.token';
  const LANG_KEY = 'streetwatch.lang';

  // ---------------------------------------------------------------------------------------------
  // Words. Every visible string is here in both languages; Vietnamese is the default.
  const KINDS = ['crowding', 'loitering', 'parking', 'encroachment', 'intrusion', 'line_crossing',
    'wrong_way', 'citizen_report'];
  const SEVERITIES = ['critical', 'warning', 'info'];
  const STATES = ['new', 'acknowledged', 'resolved'];
  const CAMERA_STATES = ['streaming', 'connecting', 'stalled', 'backoff', 'stopped'];
  const WORDS = {
    vi: {
      title: 'Trung tâm điều hành', tab_alerts: 'Cảnh báo', tab_cameras: 'Camera', tab_report: 'Báo cáo ngày',
      sign_in: 'Đăng nhập', sign_out: 'Đăng xuất', token: 'Mã truy cập',
      sign_in_help: 'Nhập mã truy cập do quản trị viên cấp.',
      bad_token: 'Mã truy cập không đúng.', signing_in: 'Đang đăng nhập…',
      reporter_only: 'Mã này chỉ dùng để gửi phản ánh của người dân; nó không xem được cảnh báo.',
      live_on: 'Trực tuyến', live_off: 'Ngoại tuyến', live_retry: 'Đang kết nối lại…',
      role_viewer: 'người xem', role_operator: 'điều hành viên', role_reporter: 'người báo tin',
      f_ward: 'Phường', f_camera: 'Camera', f_kind: 'Loại', f_severity: 'Mức độ', f_state: 'Trạng thái',
      all: 'Tất cả', no_alerts: 'Không có cảnh báo nào.',
      count: (shown, loaded, more) => `Hiển thị ${shown} / ${loaded}${more ? '+' : ''} cảnh báo`,
      loading: 'Đang tải…', show_more: 'Cuộn để xem thêm',
      kind: {
        crowding: 'Tụ tập đông người', loitering: 'Lảng vảng', parking: 'Đỗ xe sai quy định',
        encroachment: 'Lấn chiếm vỉa hè', intrusion: 'Xâm nhập khu vực cấm', line_crossing: 'Vượt vạch',
        wrong_way: 'Đi ngược chiều', citizen_report: 'Phản ánh của người dân',
      },
      severity: { critical: 'Nghiêm trọng', warning: 'Cảnh báo', info: 'Thông tin' },
      state: { new: 'Mới', acknowledged: 'Đã xác nhận', resolved: 'Đã xử lý' },
      firing: 'Đang diễn ra', ended: 'Đã kết thúc',
      acked_by: (who, at) => `Xác nhận: ${who}, ${at}`,
      resolved_by: (who, at, note) => `Xử lý: ${who}, ${at}${note ? ' — ' + note : ''}`,
      ack: 'Xác nhận', resolve: 'Xử lý xong', cancel: 'Huỷ',
      resolve_title: 'Xử lý xong cảnh báo', resolve_note: 'Ghi chú xử lý (bắt buộc)',
      note_required: 'Cần nhập ghi chú (1–1000 ký tự).',
      no_snapshot: 'Không có ảnh',
      snapshot_alt: (rule, cam) => `Ảnh chụp: ${rule}, ${cam}`,
      channel: { sms: 'SMS', email: 'E-mail', webhook: 'Webhook' },
      delivery: {
        pending: 'chờ gửi', sending: 'đang gửi', accepted: 'đã nhận', queued: 'đang chờ',
        delivered: 'đã đến', undelivered: 'không đến được', dead: 'thất bại',
      },
      ago: (s) => s < 10 ? 'vừa xong' : s < 60 ? `${s} giây trước` : s < 3600 ? `${Math.floor(s / 60)} phút trước`
        : s < 86400 ? `${Math.floor(s / 3600)} giờ trước` : `${Math.floor(s / 86400)} ngày trước`,
      forbidden: (role) => `Bị từ chối: vai trò ${role} không được phép thao tác này. Cần quyền điều hành viên.`,
      conflict: 'Cảnh báo này đã được người khác xử lý; trạng thái đã được cập nhật.',
      not_found: 'Không tìm thấy cảnh báo này.',
      session_over: 'Phiên đăng nhập không còn hiệu lực; hãy đăng nhập lại.',
      failed: (status) => `Thao tác không thành công (mã ${status}). Hãy thử lại.`,
      offline: 'Không kết nối được máy chủ. Hãy thử lại.',
      cam_state: {
        streaming: 'Đang truyền', connecting: 'Đang kết nối', stalled: 'Đứng hình', backoff: 'Chờ kết nối lại',
        stopped: 'Đã dừng',
      },
      cameras_total: (n) => `${n} camera`,
      last_frame: (s) => s == null ? 'chưa nhận khung hình nào' : `khung hình cuối ${s.toFixed(1)} giây trước`,
      restarts: (n) => `${n} lần khởi động lại`,
      nodes_title: 'Máy phân tích',
      node_state: { live: 'đang hoạt động', lost: 'mất kết nối' },
      node_line: (name, state, at, n) => `${name}: ${state} từ ${at} · ${n} camera`,
      on_node: (name) => `Máy phân tích: ${name}`,
      report: {
        node_lost: (name) => `Máy phân tích ${name} đã mất kết nối`,
        stale: (name) => `Máy phân tích ${name} không còn báo cáo camera này`,
        none: () => 'Chưa có máy phân tích nào chạy camera này',
      },
      date: 'Ngày', refresh: 'Làm mới', received: 'Tiếp nhận', acknowledged: 'Đã xác nhận', resolved: 'Đã xử lý',
      median_ack: 'Thời gian xác nhận (trung vị)', total: 'Tổng cộng',
      duration: (s) => s < 60 ? `${s} giây` : s < 3600 ? `${Math.floor(s / 60)} phút ${s % 60} giây`
        : `${Math.floor(s / 3600)} giờ ${Math.floor(s % 3600 / 60)} phút`,
      report_note: (date, off) => `Ngày ${date} (giờ UTC${off})`, no_rows: 'Không có cảnh báo trong ngày.',
    },
    en: {
      title: 'Operations centre', tab_alerts: 'Alerts', tab_cameras: 'Cameras', tab_report: 'Daily report',
      sign_in: 'Sign in', sign_out: 'Sign out', token: 'Access token',
      sign_in_help: 'Enter the access token your administrator gave you.',
      bad_token: 'That access token is not valid.', signing_in: 'Signing in…',
      reporter_only: 'This token can only submit citizen reports; it cannot view alerts.',
      live_on: 'Live', live_off: 'Offline', live_retry: 'Reconnecting…',
      role_viewer: 'viewer', role_operator: 'operator', role_reporter: 'reporter',
      f_ward: 'Ward', f_camera: 'Camera', f_kind: 'Kind', f_severity: 'Severity', f_state: 'State',
      all: 'All', no_alerts: 'No alerts.',
      count: (shown, loaded, more) => `Showing ${shown} of ${loaded}${more ? '+' : ''} alerts`,
      loading: 'Loading…', show_more: 'Scroll for more',
      kind: {
        crowding: 'Crowd gathering', loitering: 'Loitering', parking: 'Illegal parking',
        encroachment: 'Pavement encroachment', intrusion: 'Restricted area intrusion', line_crossing: 'Line crossing',
        wrong_way: 'Wrong-way movement', citizen_report: 'Citizen report',
      },
      severity: { critical: 'Critical', warning: 'Warning', info: 'Info' },
      state: { new: 'New', acknowledged: 'Acknowledged', resolved: 'Resolved' },
      firing: 'Firing', ended: 'Ended',
      acked_by: (who, at) => `Acknowledged by ${who}, ${at}`,
      resolved_by: (who, at, note) => `Resolved by ${who}, ${at}${note ? ' — ' + note : ''}`,
      ack: 'Acknowledge', resolve: 'Resolve', cancel: 'Cancel',
      resolve_title: 'Resolve alert', resolve_note: 'Resolution note (required)',
      note_required: 'A note is required (1–1000 characters).',
      no_snapshot: 'No snapshot',
      snapshot_alt: (rule, cam) => `Snapshot: ${rule}, ${cam}`,
      channel: { sms: 'SMS', email: 'E-mail', webhook: 'Webhook' },
      delivery: {
        pending: 'pending', sending: 'sending', accepted: 'accepted', queued: 'queued',
        delivered: 'delivered', undelivered: 'undelivered', dead: 'failed',
      },
      ago: (s) => s < 10 ? 'just now' : s < 60 ? `${s} s ago` : s < 3600 ? `${Math.floor(s / 60)} min ago`
        : s < 86400 ? `${Math.floor(s / 3600)} h ago` : `${Math.floor(s / 86400)} d ago`,
      forbidden: (role) => `Refused: a ${role} may not do this. It needs the operator role.`,
      conflict: 'Someone else already handled this alert; its state has been refreshed.',
      not_found: 'This alert no longer exists.',
      session_over: 'Your session is no longer valid; please sign in again.',
      failed: (status) => `The action failed (status ${status}). Please try again.`,
      offline: 'Cannot reach the server. Please try again.',
      cam_state: {
        streaming: 'Streaming', connecting: 'Connecting', stalled: 'Stalled', backoff: 'Backing off',
        stopped: 'Stopped',
      },
      cameras_total: (n) => `${n} cameras`,
      last_frame: (s) => s == null ? 'no frame received yet' : `last frame ${s.toFixed(1)} s ago`,
      restarts: (n) => `${n} restart${n === 1 ? '' : 's'}`,
      nodes_title: 'Analysis nodes',
      node_state: { live: 'live', lost: 'lost' },
      node_line: (name, state, at, n) => `${name}: ${state} since ${at} · ${n} camera${n === 1 ? '' : 's'}`,
      on_node: (name) => `Node: ${name}`,
      report: {
        node_lost: (name) => `Node ${name} lost`,
        stale: (name) => `Node ${name} stopped reporting this camera`,
        none: () => 'No node runs this camera',
      },
      date: 'Date', refresh: 'Refresh', received: 'Received', acknowledged: 'Acknowledged', resolved: 'Resolved',
      median_ack: 'Median time to acknowledge', total: 'Total',
      duration: (s) => s < 60 ? `${s} s` : s < 3600 ? `${Math.floor(s / 60)} min ${s % 60} s`
        : `${Math.floor(s / 3600)} h ${Math.floor(s % 3600 / 60)} min`,
      report_note: (date, off) => `Day ${date} (UTC${off})`, no_rows: 'No alerts that day.',
    },
  };
  let lang = localStorage.getItem(LANG_KEY) === 'en' ? 'en' : 'vi';
  const t = (key) => WORDS[lang][key];

  // ---------------------------------------------------------------------------------------------
  // State.
  const $ = (id) => document.getElementById(id);
  const S = {
    token: sessionStorage.getItem(TOKEN_KEY),
    me: null,
    alerts: new Map(),      // id -> alert JSON
    list: [],               // ids of the alerts matching the filters, newest first
    cards: new Map(),       // id -> card element, for the rendered prefix of `list`
    rendered: 0,            // list[0..rendered) have cards, in order
    cursor: null, exhausted: false, loading: null, generation: 0,
    filters: { ward: '', camera: '', kind: '', severity: '', state: '' },
    inList: new Set(),      // the ids in `list`
    cameras: new Map(),     // id -> { json, tile, seenAt }
    counts: {},
    feed: null, lastEventId: null,
    visible: new Set(),     // rendered cards now on screen (their ages tick)
    report: null,
    cspViolations: [],      // the browser test expects none
  };
  document.addEventListener('securitypolicyviolation', (e) => {
    S.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
  });
  window.streetwatch = S; // for the browser test, the render benchmark and the curious

  // ---------------------------------------------------------------------------------------------
  // API.
  class HttpError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  async function api(path, options = {}) {
    const headers = Object.assign({ Authorization: `Bearer ${S.token}` }, options.headers || {});
    let body = options.body;
    if (body !== undefined && typeof body !== 'string') {
      body = JSON.stringify(body);
      headers['Content-Type'] = 'application/json';
    }
    let res;
    try {
      res = await fetch(path, { method: options.method || 'GET', headers, body, signal: options.signal });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new HttpError(0, String(e));
    }
    const text = await res.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
    if (!res.ok) throw new HttpError(res.status, (json && json.error) || text || res.statusText);
    return json;
  }

  function say(text, kind) {
    const m = $('msg');
    m.textContent = text;
    m.className = kind === 'info' ? 'info' : '';
    m.hidden = !text;
  }

  // Turns a failed request into a sentence in the page's language.
  function explain(e) {
    if (e.status === 403) return t('forbidden')(roleName(S.me && S.me.role));
    if (e.status === 409) return t('conflict');
    if (e.status === 404) return t('not_found');
    if (e.status === 401) return t('session_over');
    if (e.status === 422) return t('note_required');
    if (e.status === 0) return t('offline');
    return t('failed')(e.status);
  }

  const roleName = (role) => t('role_' + role) || role || '';

  // ---------------------------------------------------------------------------------------------
  // Language.
  function applyLang() {
    document.documentElement.lang = lang;
    for (const el of document.querySelectorAll('[data-i18n]')) {
      const w = t(el.dataset.i18n);
      if (typeof w === 'string') el.textContent = w;
    }
    for (const b of document.querySelectorAll('[data-lang]')) b.classList.toggle('on', b.dataset.lang === lang);
    document.title = `streetwatch · ${t('title')}`;
    if (S.me) {
      showWho();
      fillFilterOptions();
      for (const [id, card] of S.cards) fillCard(card, S.alerts.get(id));
      renderLegend();
      renderNodes();
      if (S.report) renderReport(S.report);
      updateCount();
    }
    setLive(liveState);
  }

  // ---------------------------------------------------------------------------------------------
  // Signing in and out.
  async function signIn(token) {
    S.token = token;
    $('signin-err').hidden = true;
    let me;
    try {
      me = await api('/api/me');
    } catch (e) {
      S.token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      $('signin').hidden = false;
      $('signin-err').textContent = e.status === 401 ? t('bad_token') : explain(e);
      $('signin-err').hidden = false;
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    S.me = me;
    $('signin').hidden = true;
    showWho();
    $('signout').hidden = false;
    if (me.role === 'reporter') {
      say(t('reporter_only'), 'info');
      return;
    }
    $('app').hidden = false;
    $('tabs').hidden = false;
    fillFilterOptions();
    startFeed();
    await Promise.all([loadCameras(), reloadAlerts()]);
    // Navigation to here: the figure the browser test and the bench read.
    performance.mark('streetwatch-ready');
    document.body.dataset.ready = String(performance.now());
    background();
  }

  function signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  }

  function showWho() {
    const who = $('who');
    who.textContent = `${S.me.name} · ${roleName(S.me.role)}`;
    who.dataset.role = S.me.role;
    who.hidden = false;
  }

  // ---------------------------------------------------------------------------------------------
  // Filters.
  function option(value, label) {
    const o = document.createElement('option');
    o.value = value;
    o.textContent = label;
    return o;
  }

  function fillSelect(sel, pairs) {
    const keep = sel.value;
    sel.replaceChildren(option('', t('all')), ...pairs.map(([v, l]) => option(v, l)));
    sel.value = pairs.some(([v]) => v === keep) ? keep : '';
  }

  function fillFilterOptions() {
    const wards = new Set();
    const cams = [];
    for (const c of S.cameras.values()) {
      wards.add(c.json.ward);
      cams.push([c.json.id, c.json.name || c.json.id]);
    }
    for (const a of S.alerts.values()) if (a.ward) wards.add(a.ward);
    const collator = new Intl.Collator(lang);
    fillSelect($('f-ward'), [...wards].sort(collator.compare).map((w) => [w, w]));
    fillSelect($('f-camera'), cams.sort((a, b) => collator.compare(a[1], b[1])));
    fillSelect($('f-kind'), KINDS.map((k) => [k, t('kind')[k]]));
    fillSelect($('f-severity'), SEVERITIES.map((s) => [s, t('severity')[s]]));
    fillSelect($('f-state'), STATES.map((s) => [s, t('state')[s]]));
  }

  function matches(a) {
    const f = S.filters;
    return (!f.ward || a.ward === f.ward) && (!f.camera || a.camera === f.camera) && (!f.kind || a.kind === f.kind)
      && (!f.severity || a.severity === f.severity) && (!f.state || a.state === f.state);
  }

  function query(cursor) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(S.filters)) if (v) p.set(k, v);
    p.set('limit', String(cursor ? FETCH : PAGE));
    if (cursor) p.set('cursor', cursor);
    return '/api/alerts?' + p.toString();
  }

  // ---------------------------------------------------------------------------------------------
  // The alert list: newest first (started_at desc, id desc), as the API orders it.
  const newer = (a, b) => b.started_at - a.started_at || b.id - a.id;

  async function reloadAlerts() {
    const gen = ++S.generation;
    for (const card of S.cards.values()) card.remove();
    S.cards.clear();
    S.visible.clear();
    S.list = [];
    S.inList = new Set();
    S.rendered = 0;
    S.cursor = null;
    S.exhausted = false;
    S.loading = null;
    // Alerts the live feed changes while the first page is on its way are not overwritten by it.
    S.fedSince = new Set();
    $('more').textContent = t('loading');
    await loadMore(gen);
    if (gen !== S.generation) return;
    S.fedSince = null;
    await fill();
  }

  // Fetches the next page into memory (once at a time).
  function loadMore(gen = S.generation) {
    if (S.exhausted) return Promise.resolve();
    if (S.loading) return S.loading;
    S.loading = (async () => {
      try {
        const page = await api(query(S.cursor));
        if (gen !== S.generation) return;
        for (const a of page.alerts) {
          if (!(S.fedSince && S.fedSince.has(a.id))) S.alerts.set(a.id, a);
          if (!S.inList.has(a.id) && matches(S.alerts.get(a.id))) {
            S.list.push(a.id);
            S.inList.add(a.id);
          }
        }
        S.cursor = page.next_cursor;
        S.exhausted = !page.next_cursor;
      } catch (e) {
        if (e.status === 401) return signOut();
        say(explain(e));
        S.exhausted = true;
      } finally {
        if (gen === S.generation) S.loading = null;
      }
    })();
    return S.loading;
  }

  // Loads up to KEEP alerts in the background, a page at a time, so the count and scrolling are ready.
  async function background() {
    const gen = S.generation;
    while (!S.exhausted && S.list.length < KEEP && gen === S.generation) {
      await loadMore(gen);
      updateCount();
    }
    if (gen === S.generation) {
      performance.mark('streetwatch-loaded');
      document.body.dataset.loaded = String(performance.now());
    }
  }

  // Adds the next PAGE cards to the DOM (fetching first if memory runs short). Only fill() calls it.
  async function renderMore() {
    const gen = S.generation;
    if (S.rendered + PAGE > S.list.length && !S.exhausted) await loadMore();
    if (gen !== S.generation) return;
    const end = Math.min(S.list.length, S.rendered + PAGE);
    const frag = document.createDocumentFragment();
    for (let i = S.rendered; i < end; i++) frag.append(cardFor(S.list[i]));
    $('cards').append(frag);
    S.rendered = end;
    updateCount();
  }

  // Adds cards while the end of the list is within a screen of view (after a reload, a scroll, a tall
  // window). One run at a time; a call during a run makes it look again, and waits for it.
  let filling = null;
  let fillAgain = false;
  const needMore = () => S.me && !$('view-alerts').hidden && (S.rendered < S.list.length || !S.exhausted)
    && $('more').getBoundingClientRect().top < innerHeight + 800;
  function fill() {
    if (filling) {
      fillAgain = true;
      return filling;
    }
    // The first await comes before anything else, so `filling` is set before the run can end and clear it.
    const run = (async () => {
      await null;
      try {
        do {
          fillAgain = false;
          while (needMore()) {
            const before = S.rendered;
            const gen = S.generation;
            await renderMore();
            if (S.rendered === before && gen === S.generation) break;
          }
        } while (fillAgain);
      } finally {
        if (filling === run) filling = null;
      }
    })();
    filling = run;
    return run;
  }

  function updateCount() {
    const more = !S.exhausted;
    $('count').textContent = t('count')(S.rendered, S.list.length, more);
    $('empty').hidden = S.list.length > 0 || more;
    $('more').textContent = S.rendered < S.list.length || more ? t('show_more') : '';
  }

  // A live alert event: update in place, insert in order, or drop out of the filtered list.
  function applyAlert(a) {
    if (S.fedSince) S.fedSince.add(a.id);
    const isNew = !S.alerts.has(a.id);
    S.alerts.set(a.id, a);
    const listed = S.inList.has(a.id);
    if (listed && !matches(a)) {
      S.list.splice(S.list.indexOf(a.id), 1);
      S.inList.delete(a.id);
      const card = S.cards.get(a.id);
      if (card) {
        card.remove();
        S.cards.delete(a.id);
        S.visible.delete(card);
        S.rendered--;
      }
    } else if (listed) {
      const card = S.cards.get(a.id);
      if (card) fillCard(card, a);
    } else if (matches(a)) {
      // Binary search for its place (the list is sorted newest first).
      let lo = 0, hi = S.list.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (newer(S.alerts.get(S.list[mid]), a) <= 0) lo = mid + 1; else hi = mid;
      }
      // Past the loaded end of a list with more to fetch: it will come with its page.
      if (lo === S.list.length && !S.exhausted) return;
      S.list.splice(lo, 0, a.id);
      S.inList.add(a.id);
      if (lo <= S.rendered) {
        const card = cardFor(a.id);
        if (isNew) card.classList.add('fresh');
        const next = S.cards.get(S.list[lo + 1]);
        if (next && lo < S.rendered) $('cards').insertBefore(card, next); else $('cards').append(card);
        S.rendered++;
      }
      if (isNew && a.ward && ![...$('f-ward').options].some((o) => o.value === a.ward)) fillFilterOptions();
    }
    updateCount();
  }

  // ---------------------------------------------------------------------------------------------
  // Cards.
  const tpl = () => $('card-tpl').content.firstElementChild;

  function cardFor(id) {
    const card = tpl().cloneNode(true);
    card.dataset.id = String(id);
    card.dataset.shownAt = String(Date.now());
    // A snapshot pruned by retention: the placeholder instead of a broken image.
    card.querySelector('.shot img').addEventListener('error', (e) => {
      e.target.hidden = true;
      card.querySelector('.shot').dataset.empty = t('no_snapshot');
    });
    fillCard(card, S.alerts.get(id));
    S.cards.set(id, card);
    seen.observe(card);
    return card;
  }

  // One formatter per language: building one per call (toLocaleString) costs more than the rest of a card.
  const formats = {};
  const when = (ms) => {
    if (!ms) return '';
    formats[lang] = formats[lang] || new Intl.DateTimeFormat(lang === 'vi' ? 'vi-VN' : 'en-GB', {
      hour: '2-digit', minute: '2-digit', second: '2-digit', day: '2-digit', month: '2-digit',
    });
    return formats[lang].format(ms);
  };

  function ageText(a) {
    const s = Math.max(0, Math.floor((Date.now() - a.started_at) / 1000));
    return t('ago')(s);
  }

  function fillCard(card, a) {
    const q = (sel) => card.querySelector(sel);
    const rule = t('kind')[a.kind] || a.rule || a.kind;
    card.className = `card sev-${a.severity} st-${a.state}` + (card.classList.contains('fresh') ? ' fresh' : '');
    card.dataset.state = a.state;
    card.dataset.kind = a.kind;
    const img = q('.shot img');
    if (a.snapshot_url) {
      if (img.getAttribute('src') !== a.snapshot_url) img.src = a.snapshot_url;
      img.alt = t('snapshot_alt')(rule, a.camera_name || a.camera);
      img.hidden = false;
      delete q('.shot').dataset.empty;
    } else {
      img.hidden = true;
      img.removeAttribute('src');
      q('.shot').dataset.empty = t('no_snapshot');
    }
    const sev = q('.sev');
    sev.className = 'sev ' + a.severity;
    sev.textContent = t('severity')[a.severity] || a.severity;
    q('.rule').textContent = rule;
    const fire = q('.fire');
    fire.className = 'fire ' + (a.firing ? 'on' : 'off');
    fire.textContent = a.firing ? t('firing') : t('ended');
    q('.cam').textContent = a.camera_name || a.camera;
    q('.ward').textContent = a.ward;
    const age = q('.age');
    age.textContent = ageText(a);
    age.title = when(a.started_at);
    q('.summary').textContent = a.summary;
    q('.summary').title = a.summary;
    const st = q('.state');
    st.dataset.state = a.state;
    st.textContent = t('state')[a.state] || a.state;
    const handled = [];
    if (a.acknowledged_by) handled.push(t('acked_by')(a.acknowledged_by, when(a.acknowledged_at)));
    if (a.resolved_by) handled.push(t('resolved_by')(a.resolved_by, when(a.resolved_at), a.resolution_note));
    q('.handled').textContent = handled.join(' · ');
    fillChips(q('.chips'), a.deliveries || []);
    const ack = q('.ack');
    ack.textContent = t('ack');
    ack.hidden = a.state !== 'new';
    const res = q('.resolve');
    res.textContent = t('resolve');
    res.hidden = a.state === 'resolved';
  }

  const GOOD = new Set(['accepted', 'delivered']);
  const BAD = new Set(['undelivered', 'dead']);
  function fillChips(box, deliveries) {
    const chips = deliveries.map((d) => {
      const c = document.createElement('span');
      c.className = 'chip ' + (GOOD.has(d.state) ? 'good' : BAD.has(d.state) ? 'bad' : 'wait');
      c.dataset.channel = d.channel;
      c.dataset.state = d.state;
      c.textContent = `${t('channel')[d.channel] || d.channel}: ${t('delivery')[d.state] || d.state}`;
      c.title = `${d.receiver} · ${d.attempts} · ${when(d.updated_at)}${d.last_error ? ' · ' + d.last_error : ''}`;
      return c;
    });
    box.replaceChildren(...chips);
  }

  // Acknowledge and resolve.
  async function act(card, action, note) {
    const id = Number(card.dataset.id);
    const err = card.querySelector('.err');
    err.hidden = true;
    for (const b of card.querySelectorAll('.actions button')) b.disabled = true;
    try {
      const a = await api(`/api/alerts/${id}/${action}`, { method: 'POST', body: note ? { note } : {} });
      applyAlert(a);
      say('');
      return true;
    } catch (e) {
      if (e.status === 401) { signOut(); return false; }
      const text = explain(e);
      err.textContent = text;
      err.hidden = false;
      card.dataset.error = String(e.status);
      say(text);
      if (e.status === 409) {
        try { applyAlert(await api(`/api/alerts/${id}`)); } catch (_) { /* the feed will bring it */ }
      }
      return e.status === 422 ? 'note' : false;
    } finally {
      for (const b of card.querySelectorAll('.actions button')) b.disabled = false;
    }
  }

  let resolving = null;
  function askNote(card) {
    resolving = card;
    $('resolve-note').value = '';
    $('resolve-err').hidden = true;
    $('resolve-dlg').showModal();
    $('resolve-note').focus();
  }
  async function resolveOk() {
    const note = $('resolve-note').value.trim();
    if (!note || note.length > 1000) {
      $('resolve-err').textContent = t('note_required');
      $('resolve-err').hidden = false;
      return;
    }
    const card = resolving;
    $('resolve-dlg').close();
    if (card) await act(card, 'resolve', note);
  }

  // Ages tick only on the cards on screen.
  const seen = new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (e.isIntersecting) S.visible.add(e.target); else S.visible.delete(e.target);
    }
  });
  function tick() {
    for (const card of S.visible) {
      const a = S.alerts.get(Number(card.dataset.id));
      if (a) card.querySelector('.age').textContent = ageText(a);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Camera wall: one tile per camera, grouped by ward, updated in place.
  async function loadCameras() {
    let doc;
    try {
      doc = await api('/api/cameras');
    } catch (e) {
      if (e.status === 401) return signOut();
      say(explain(e));
      return;
    }
    const now = performance.now();
    const byWard = new Map();
    for (const c of doc.cameras) {
      if (!byWard.has(c.ward)) byWard.set(c.ward, []);
      byWard.get(c.ward).push(c);
    }
    const collator = new Intl.Collator('vi');
    const wall = document.createDocumentFragment();
    S.cameras.clear();
    for (const ward of [...byWard.keys()].sort(collator.compare)) {
      const g = document.createElement('div');
      g.className = 'ward-group';
      const h = document.createElement('h3');
      h.textContent = `${ward} (${byWard.get(ward).length})`;
      const tiles = document.createElement('div');
      tiles.className = 'tiles';
      for (const c of byWard.get(ward)) {
        const tile = document.createElement('span');
        tile.className = tileClass(c);
        tile.dataset.id = c.id;
        tile.dataset.state = c.state;
        S.cameras.set(c.id, { json: c, tile, seenAt: now });
        tiles.append(tile);
      }
      g.append(h, tiles);
      wall.append(g);
    }
    $('wall').replaceChildren(wall);
    S.nodes = doc.nodes;
    renderNodes();
    recount();
    fillFilterOptions();
  }

  // A camera whose health no live node reports (on a router) is outlined: its colour is its last state.
  const tileClass = (c) => 'tile s-' + c.state + (c.report && c.report !== 'live' ? ' unreported' : '');

  // On a router: the analysis nodes, live or lost and since when. Absent in one process.
  function renderNodes() {
    const box = $('nodes');
    box.hidden = !S.nodes;
    if (!S.nodes) return;
    const title = document.createElement('b');
    title.textContent = t('nodes_title');
    const items = S.nodes.map((n) => {
      const k = document.createElement('span');
      k.className = 'node n-' + n.state;
      k.textContent = t('node_line')(n.node, t('node_state')[n.state] || n.state, when(n.since), n.cameras);
      return k;
    });
    box.replaceChildren(title, ...items);
  }

  function recount() {
    const counts = Object.fromEntries(CAMERA_STATES.map((s) => [s, 0]));
    for (const c of S.cameras.values()) counts[c.json.state] = (counts[c.json.state] || 0) + 1;
    S.counts = counts;
    renderLegend();
  }

  function renderLegend() {
    const items = CAMERA_STATES.map((s) => {
      const k = document.createElement('span');
      k.className = 'k';
      k.dataset.state = s;
      const sw = document.createElement('span');
      sw.className = 'sw s-' + s;
      const n = document.createElement('b');
      n.textContent = String(S.counts[s] || 0);
      k.append(sw, `${t('cam_state')[s]}: `, n);
      return k;
    });
    const total = document.createElement('span');
    total.className = 'count';
    total.textContent = t('cameras_total')(S.cameras.size);
    $('legend').replaceChildren(...items, total);
  }

  // One camera's new health: its tile changes colour in place, the counts follow.
  function applyCamera(c, quiet) {
    const known = S.cameras.get(c.id);
    if (!known) return false; // a camera the page does not know yet: next load shows it
    const before = known.json.state;
    const className = known.tile.className;
    known.json = Object.assign({}, known.json, c);
    known.seenAt = performance.now();
    known.tile.className = tileClass(known.json);
    if (before === known.json.state) return className !== known.tile.className;
    known.tile.dataset.state = known.json.state;
    S.counts[before] = (S.counts[before] || 1) - 1;
    S.counts[known.json.state] = (S.counts[known.json.state] || 0) + 1;
    if (!quiet) renderLegend();
    return true;
  }

  // While the wall is on screen its counters and frame ages are refreshed (the feed sends state changes only).
  async function refreshCameras() {
    if ($('view-cameras').hidden || !S.me || S.cameras.size === 0) return;
    let doc;
    try { doc = await api('/api/cameras'); } catch (_) { return; }
    let changed = false;
    for (const c of doc.cameras) changed = applyCamera(c, true) || changed;
    if (changed) renderLegend();
    S.nodes = doc.nodes;
    renderNodes();
  }

  // The tooltip is written when the pointer reaches a tile: the age is current, and 1,100 tiles cost
  // nothing while nobody looks.
  function tileTitle(tile) {
    const c = S.cameras.get(tile.dataset.id);
    if (!c) return;
    const j = c.json;
    // A camera not streaming gets no frames, so its last frame ages from when the page learnt it.
    const since = j.state === 'streaming' ? 0 : (performance.now() - c.seenAt) / 1000;
    const age = j.last_frame_age_s == null ? null : j.last_frame_age_s + since;
    const report = j.report && j.report !== 'live' ? t('report')[j.report] : null;
    tile.title = [`${j.name || j.id} · ${j.ward}`, t('cam_state')[j.state] || j.state, report && report(j.node),
      j.node && t('on_node')(j.node), t('last_frame')(age), t('restarts')(j.restarts || 0), j.last_error || '']
      .filter(Boolean).join('\n');
  }

  // ---------------------------------------------------------------------------------------------
  // Live feed: Server-Sent Events read with fetch, since EventSource cannot send the Authorization header.
  let liveState = 'off';
  function setLive(state) {
    liveState = state;
    const el = $('live');
    el.dataset.state = state;
    el.textContent = t('live_' + state);
  }

  function startFeed() {
    if (S.feed) S.feed.abort();
    const ctl = new AbortController();
    S.feed = ctl;
    (async () => {
      let wait = 1000;
      let first = true;
      while (!ctl.signal.aborted) {
        try {
          const headers = { Authorization: `Bearer ${S.token}`, Accept: 'text/event-stream' };
          if (S.lastEventId) headers['Last-Event-ID'] = S.lastEventId;
          const res = await fetch('/api/events', { headers, signal: ctl.signal, cache: 'no-store' });
          if (res.status === 401) { signOut(); return; }
          if (!res.ok || !res.body) throw new HttpError(res.status, 'feed');
          setLive('on');
          wait = 1000;
          // A stream cut before its first event id cannot resume: what it missed comes with a fresh list.
          if (!first && !S.lastEventId) reloadAlerts().then(background);
          first = false;
          await readEvents(res.body, (ev) => {
            if (ev.retry) wait = ev.retry;
            if (ev.id !== undefined) S.lastEventId = ev.id;
            if (!ev.data) return;
            let data;
            try { data = JSON.parse(ev.data); } catch (_) { return; }
            if (ev.event === 'alert') queueEvent('a' + data.id, data);
            else if (ev.event === 'camera') queueEvent('c' + data.id, data);
          });
        } catch (e) {
          if (ctl.signal.aborted) return;
        }
        setLive('retry');
        await new Promise((r) => setTimeout(r, wait));
        wait = Math.min(wait * 2, 10000);
      }
    })();
  }

  // Live events are applied once a frame, the latest per alert or camera: a burst (a gateway coming back
  // with a thousand delivery reports, cameras flapping) costs one update per card and one legend.
  const pending = new Map();
  let flushQueued = false;
  function queueEvent(key, data) {
    if (key[0] === 'a' && S.fedSince) S.fedSince.add(data.id);
    pending.delete(key); // keeps arrival order for the latest
    pending.set(key, data);
    if (!flushQueued) {
      flushQueued = true;
      requestAnimationFrame(flushEvents);
      setTimeout(flushEvents, 250); // a hidden tab gets no frames
    }
  }
  function flushEvents() {
    if (!flushQueued) return;
    flushQueued = false;
    let cameras = false;
    for (const [key, data] of pending) {
      if (key[0] === 'a') applyAlert(data);
      else cameras = applyCamera(data, true) || cameras;
    }
    pending.clear();
    if (cameras) renderLegend();
  }

  // Parses a text/event-stream body (https://html.spec.whatwg.org/multipage/server-sent-events.html).
  async function readEvents(body, dispatch) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let ev = { data: '' };
    let hasData = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      // Split once per chunk (slicing the buffer per line is quadratic in a burst); a trailing \r may be
      // half of a \r\n, so it waits for the next chunk.
      const cut = buf.endsWith('\r') ? buf.length - 1 : buf.length;
      const lines = buf.slice(0, cut).split(/\r\n|\r|\n/);
      buf = lines.pop() + buf.slice(cut);
      for (const line of lines) {
        if (line === '') {
          if (hasData || ev.id !== undefined || ev.retry) {
            if (ev.data.endsWith('\n')) ev.data = ev.data.slice(0, -1);
            dispatch(ev);
          }
          ev = { data: '' };
          hasData = false;
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? '' : line.slice(colon + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (field === 'data') { ev.data += value + '\n'; hasData = true; }
        else if (field === 'event') ev.event = value;
        else if (field === 'id' && !value.includes('\0')) ev.id = value;
        else if (field === 'retry' && /^\d+$/.test(value)) ev.retry = Number(value);
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Daily report.
  async function loadReport() {
    const date = $('r-date').value;
    try {
      S.report = await api('/api/report/daily' + (date ? '?date=' + encodeURIComponent(date) : ''));
    } catch (e) {
      if (e.status === 401) return signOut();
      say(explain(e));
      return;
    }
    if (!date) $('r-date').value = S.report.date;
    renderReport(S.report);
  }

  function duration(s) {
    return s == null ? '—' : t('duration')(Math.round(s));
  }

  function row(cells, numeric) {
    const tr = document.createElement('tr');
    cells.forEach((v, i) => {
      const td = document.createElement('td');
      td.textContent = v;
      if (i >= numeric) td.className = 'n';
      tr.append(td);
    });
    return tr;
  }

  function renderReport(r) {
    const off = r.utc_offset_minutes;
    const sign = off < 0 ? '−' : '+';
    const abs = Math.abs(off);
    $('r-note').textContent = t('report_note')(r.date, `${sign}${Math.floor(abs / 60)}${abs % 60 ? ':' + String(abs % 60).padStart(2, '0') : ''}`);
    const body = $('report').tBodies[0];
    const rows = r.rows.map((x) => row([x.ward, t('kind')[x.kind] || x.kind, x.received, x.acknowledged, x.resolved,
      duration(x.median_ack_seconds)], 2));
    if (!rows.length) {
      const tr = document.createElement('tr');
      const td = document.createElement('td');
      td.colSpan = 6;
      td.textContent = t('no_rows');
      tr.append(td);
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    const x = r.totals;
    $('report').tFoot.replaceChildren(row([t('total'), '', x.received, x.acknowledged, x.resolved,
      duration(x.median_ack_seconds)], 2));
  }

  // ---------------------------------------------------------------------------------------------
  // Wiring.
  function showTab(name) {
    for (const b of document.querySelectorAll('[data-tab]')) b.classList.toggle('on', b.dataset.tab === name);
    for (const v of ['alerts', 'cameras', 'report']) $('view-' + v).hidden = v !== name;
    if (name === 'report') loadReport();
    if (name === 'alerts') fill();
  }

  S.applyAlert = (a) => applyAlert(a);

  function start() {
    applyLang();
    for (const b of document.querySelectorAll('[data-lang]')) {
      b.addEventListener('click', () => {
        lang = b.dataset.lang;
        localStorage.setItem(LANG_KEY, lang);
        applyLang();
      });
    }
    $('signin-go').addEventListener('click', () => {
      const v = $('token').value.trim();
      if (v) signIn(v);
    });
    $('token').addEventListener('keydown', (e) => {
      if (e.key === 'Enter') $('signin-go').click();
    });
    $('signout').addEventListener('click', signOut);
    for (const b of document.querySelectorAll('[data-tab]')) b.addEventListener('click', () => showTab(b.dataset.tab));
    for (const k of Object.keys(S.filters)) {
      $('f-' + k).addEventListener('change', (e) => {
        S.filters[k] = e.target.value;
        reloadAlerts().then(background);
      });
    }
    $('cards').addEventListener('click', async (e) => {
      const b = e.target.closest('button');
      if (!b) return;
      const card = b.closest('.card');
      if (b.classList.contains('ack')) await act(card, 'ack');
      else if (b.classList.contains('resolve')) askNote(card);
    });
    $('resolve-ok').addEventListener('click', resolveOk);
    $('resolve-cancel').addEventListener('click', () => $('resolve-dlg').close());
    $('wall').addEventListener('mouseover', (e) => {
      if (e.target.classList.contains('tile')) tileTitle(e.target);
    });
    $('wall').addEventListener('click', (e) => {
      if (!e.target.classList.contains('tile')) return;
      $('f-camera').value = e.target.dataset.id;
      S.filters.camera = e.target.dataset.id;
      showTab('alerts');
      reloadAlerts().then(background);
    });
    $('r-go').addEventListener('click', loadReport);
    // More cards when the end of the list comes near (checked at most once a frame).
    let queued = false;
    const nearEnd = () => {
      if (queued) return;
      queued = true;
      requestAnimationFrame(() => { queued = false; fill(); });
    };
    addEventListener('scroll', nearEnd, { passive: true });
    addEventListener('resize', nearEnd);
    setInterval(tick, 1000);
    setInterval(refreshCameras, 10000);
    if (S.token) signIn(S.token);
    else $('token').focus();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
