/*
 * crossws_sync demo chat page. Uses the browser client served by the node at /ws-connector.js
 * (window.WebSocketConnector) and the events described in crossws_sync/demo/node.py.
 * Everything the server sends is shown with textContent (never parsed as HTML).
 */
(function () {
  'use strict';

  var NAME_RE = /^[\p{L}\p{N}_][\p{L}\p{N}_ .\-]{0,23}$/u;
  var ROOM_RE = /^[\p{L}\p{N}_][\p{L}\p{N}_.\-]{0,31}$/u;
  var WHO_REFRESH_MS = 5000;

  var state = {
    conn: null,
    name: null,
    room: null,
    node: null,
    users: new Map(),   // name -> {name, node, room}
    whoTimer: null,
    refreshSoon: null
  };

  function $(id) { return document.getElementById(id); }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function clock(seconds) {
    var date = seconds ? new Date(seconds * 1000) : new Date();
    return date.toTimeString().slice(0, 8);
  }

  function setStatus(text) { $('status').textContent = text; }

  // ---- Messages ----------------------------------------------------------

  function addLine(kind, parts, time) {
    var list = $('messages');
    var item = el('li', 'msg ' + kind);
    item.appendChild(el('span', 'time', clock(time)));
    parts.forEach(function (part) { item.appendChild(el('span', part[0], part[1])); });
    list.appendChild(item);
    while (list.children.length > 500) list.removeChild(list.firstChild);
    list.scrollTop = list.scrollHeight;
    return item;
  }

  function system(text) { addLine('system', [['text', text]]); }

  function showRoomMessage(m) {
    var item = addLine(m.from === state.name ? 'room mine' : 'room', [
      ['from', m.from], ['node', '@' + m.node], ['text', m.text]
    ], m.time);
    item.dataset.from = m.from;
  }

  function showDirect(m, outgoing, node) {
    var parts = outgoing
      ? [['from', 'you \u2192 ' + m.to], ['node', '@' + node], ['text', m.text]]
      : [['from', m.from + ' \u2192 you'], ['node', '@' + m.node], ['text', m.text]];
    var item = addLine(outgoing ? 'direct mine' : 'direct', parts, m.time);
    item.dataset.from = m.from;
  }

  // ---- Online list -------------------------------------------------------

  function renderUsers() {
    var list = $('online-list');
    var names = $('online-names');
    list.textContent = '';
    names.textContent = '';
    var users = Array.from(state.users.values()).sort(function (a, b) { return a.name < b.name ? -1 : 1; });
    users.forEach(function (user) {
      var item = el('li', user.name === state.name ? 'user me' : 'user');
      item.dataset.name = user.name;
      item.dataset.node = user.node;
      item.appendChild(el('span', 'name', user.name));
      item.appendChild(el('span', 'node', user.node));
      item.appendChild(el('span', 'room', '#' + (user.room || '?')));
      if (user.name !== state.name) {
        var button = el('button', 'dm', 'DM');
        button.type = 'button';
        button.addEventListener('click', function () {
          $('dm-to').value = user.name;
          $('dm-text').focus();
        });
        item.appendChild(button);
        names.appendChild(el('option')).value = user.name;
      }
      list.appendChild(item);
    });
    $('online-count').textContent = '(' + users.length + ')';
  }

  function applyPresence(p) {
    var known = state.users.get(p.name);
    if (p.online) {
      state.users.set(p.name, { name: p.name, node: p.node, room: p.room });
      if (p.name !== state.name && (!known || known.room !== p.room) && p.room === state.room) {
        system(p.name + ' joined #' + p.room + ' on ' + p.node);
      } else if (known && known.room === state.room && p.room !== state.room && p.name !== state.name) {
        system(p.name + ' went to #' + p.room);
      }
    } else if (known && known.node === p.node) {
      // A "left" from a node the user is no longer on (logged in elsewhere) is stale.
      state.users.delete(p.name);
      if (known.room === state.room) system(p.name + ' left');
    }
    renderUsers();
    scheduleRefresh(400);
  }

  function refreshWho() {
    var conn = state.conn;
    if (!conn || !conn.connected) return;
    conn.emitWithPromise('who', {}).then(function (result) {
      if (!result.success || conn !== state.conn) return;
      state.users = new Map();
      result.data.users.forEach(function (user) { state.users.set(user.name, user); });
      renderUsers();
    });
    refreshNodes();
  }

  function scheduleRefresh(delay) {
    if (state.refreshSoon) clearTimeout(state.refreshSoon);
    state.refreshSoon = setTimeout(function () {
      state.refreshSoon = null;
      refreshWho();
    }, delay);
  }

  function refreshNodes() {
    var conn = state.conn;
    conn.emitWithPromise('nodes', {}).then(function (result) {
      if (!result.success || conn !== state.conn) return;
      var list = $('nodes-list');
      list.textContent = '';
      result.data.forEach(function (node) {
        var item = el('li', node.name === state.node ? 'node here' : 'node');
        item.dataset.node = node.name;
        item.appendChild(el('span', 'name', node.name));
        item.appendChild(el('span', 'users', node.users + (node.users === 1 ? ' user' : ' users')));
        if (node.name === state.node) {
          item.appendChild(el('span', 'here', 'you are here'));
        } else if (node.port) {
          var link = el('a', 'open', 'open');
          link.href = location.protocol + '//' + location.hostname + ':' + node.port + '/?room=' + encodeURIComponent(state.room || 'lobby');
          link.target = '_blank';
          link.rel = 'noopener';
          item.appendChild(link);
        }
        list.appendChild(item);
      });
    });
  }

  // ---- Connection --------------------------------------------------------

  function connect(name, room) {
    state.name = name;
    state.room = room;
    $('me').textContent = name;
    var conn = new WebSocketConnector({
      url: '/ws',
      // A function: a reconnection rejoins the room the user is in now, not the first one.
      customParams: function () { return { name: state.name, room: state.room }; },
      pingInterval: 2000,
      pongTimeout: 3000,
      callbackTimeout: 5000,
      autoReconnect: true,
      fastReconnectThreshold: 5,
      fastReconnectInterval: 1000,
      reconnectMaxInterval: 10000
    });
    state.conn = conn;
    setStatus('connecting');

    conn.on('open', function () { setStatus('connected'); });
    conn.on('close', function (event) {
      if (conn !== state.conn) return;
      setStatus('disconnected (' + event.code + ')');
      if (event.code === 4012) {
        system('This name was opened in another window: this one is disconnected.');
      } else if (event.code === 4011) {
        leave('Refused: ' + (event.reason || 'invalid name or room'));
      } else if (event.code !== 4001) {
        system('Connection lost (' + event.code + '); reconnecting\u2026');
      }
    });
    conn.on('reconnect', function (info) {
      setStatus('reconnecting in ' + (info.timeout / 1000).toFixed(1) + ' s (attempt ' + info.repeat + ')');
    });
    conn.on('pong', function (latency) { $('latency').textContent = latency.toFixed(1) + ' ms'; });

    conn.on('welcome', function (info) {
      state.node = info.node;
      state.room = info.room;
      $('node-name').textContent = info.node;
      $('room-name').textContent = '#' + info.room;
      document.title = info.name + ' @ ' + info.node + ' \u2013 crossws_sync demo';
      $('login').hidden = true;
      $('chat').hidden = false;
      system('Welcome ' + info.name + ': you are on ' + info.node + ', in #' + info.room + '.');
      refreshWho();
      if (state.whoTimer) clearInterval(state.whoTimer);
      state.whoTimer = setInterval(refreshWho, WHO_REFRESH_MS);
      $('message-input').focus();
    });
    conn.on('chat', showRoomMessage);
    conn.on('direct', function (m) { showDirect(m, false); });
    conn.on('presence', applyPresence);
  }

  function leave(why) {
    if (state.conn) state.conn.manualClose();
    state.conn = null;
    if (state.whoTimer) clearInterval(state.whoTimer);
    state.whoTimer = null;
    state.users = new Map();
    $('messages').textContent = '';
    $('chat').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = why || '';
    setStatus('not connected');
  }

  /** emitWithPromise that shows the ack round trip in the header. */
  function request(event, data) {
    var started = performance.now();
    return state.conn.emitWithPromise(event, data).then(function (result) {
      if (result.success) $('ack-time').textContent = (performance.now() - started).toFixed(1) + ' ms';
      return result;
    });
  }

  function failed(result) {
    if (!result.success) return result.error || result.errorCode || 'no answer';
    return result.data && result.data.ok === false ? result.data.error : null;
  }

  // ---- Forms -------------------------------------------------------------

  $('login-form').addEventListener('submit', function (event) {
    event.preventDefault();
    var name = $('name').value.trim();
    var room = $('room').value.trim() || 'lobby';
    if (!NAME_RE.test(name)) {
      $('login-error').textContent = 'Name: 1-24 letters, digits, spaces, ".", "_" or "-".';
      return;
    }
    if (!ROOM_RE.test(room)) {
      $('login-error').textContent = 'Room: 1-32 letters, digits, ".", "_" or "-".';
      return;
    }
    $('login-error').textContent = '';
    connect(name, room);
  });

  $('send-form').addEventListener('submit', function (event) {
    event.preventDefault();
    var input = $('message-input');
    var text = input.value.trim();
    if (!text || !state.conn) return;
    request('say', { text: text }).then(function (result) {
      var error = failed(result);
      if (error) system('Not sent: ' + error);
    });
    input.value = '';
  });

  $('dm-form').addEventListener('submit', function (event) {
    event.preventDefault();
    var to = $('dm-to').value.trim();
    var input = $('dm-text');
    var text = input.value.trim();
    if (!to || !text || !state.conn) return;
    request('dm', { to: to, text: text }).then(function (result) {
      var error = failed(result);
      if (error) system('Direct message to ' + to + ' not sent: ' + error);
      else showDirect(result.data.message, true, result.data.node);
    });
    input.value = '';
  });

  $('room-form').addEventListener('submit', function (event) {
    event.preventDefault();
    var input = $('room-input');
    var room = input.value.trim();
    if (!ROOM_RE.test(room) || !state.conn) {
      system('Room: 1-32 letters, digits, ".", "_" or "-".');
      return;
    }
    request('join', { room: room }).then(function (result) {
      var error = failed(result);
      if (error) {
        system('Could not change room: ' + error);
        return;
      }
      state.room = result.data.room;
      $('room-name').textContent = '#' + state.room;
      system('You are now in #' + state.room + '.');
      refreshWho();
    });
    input.value = '';
  });

  $('leave').addEventListener('click', function () { leave(''); });

  // Pre-fill from the query string: /?name=alice&room=lobby
  var query = new URLSearchParams(location.search);
  if (query.get('name')) $('name').value = query.get('name');
  if (query.get('room')) $('room').value = query.get('room');
  fetch('/api/info').then(function (r) { return r.json(); }).then(function (info) {
    if (!state.node) $('node-name').textContent = info.node;
  }).catch(function () { /* the header keeps "?" */ });
})();
