/*!
 * crossws_sync ws-connector.js: the browser client (WebSocketConnector).
 * Same API, event names and wire frames as the JavaScript connector of
 * websocket-cross-server-adapter, without its client-side bugs. MIT licence.
 *
 * This file is the single source of truth: build.py writes ws-connector.mjs
 * (ES module) and ws-connector.min.js from it.
 *
 * Load it with <script src=".../ws-connector.js"></script> (defines
 * window.WebSocketConnector), with require() in Node (module.exports is the
 * class; falls back to the "ws" package when there is no global WebSocket),
 * or import the ES module ws-connector.mjs.
 */
(function (root, factory) {
  'use strict';
  var isCommonJS = typeof module === 'object' && module !== null && typeof module.exports === 'object';
  var nodeRequire = isCommonJS && typeof require === 'function' ? require : null;
  var WebSocketConnector = factory(function findWebSocket() {
    if (root && typeof root.WebSocket === 'function') return root.WebSocket;
    if (nodeRequire) {
      try {
        return nodeRequire('ws');
      } catch (err) {
        return null;
      }
    }
    return null;
  });
  if (isCommonJS) {
    module.exports = WebSocketConnector;
  } else if (root) {
    root.WebSocketConnector = WebSocketConnector;
  }
})(typeof globalThis !== 'undefined' ? globalThis : typeof self !== 'undefined' ? self : this,
// @@core-begin
function (findWebSocket) {
  'use strict';

  var CONNECTING = 0;
  var OPEN = 1;
  var CLOSED = 3;
  var MANUAL_CLOSE_CODE = 4001;
  var MANUAL_CLOSE_REASON = 'client manual close';
  var LIFECYCLE_EVENTS = ['open', 'close', 'error', 'message', 'ping', 'pong', 'pong-timeout', 'reconnect', 'repeat-limit'];

  var DEFAULTS = {
    url: '',
    pingInterval: 10000,
    pongTimeout: 2000,
    fastReconnectThreshold: 3,
    fastReconnectInterval: 3000,
    reconnectMaxInterval: 120000,
    pingMsg: '',
    callbackTimeout: 5000,
    repeatLimit: null,
    pendingTimeout: 100,
    customParams: {},
    // Additions (not in the original connector):
    connectTimeout: 10000,
    autoReconnect: false,
    noReconnectCodes: [4001, 4010, 4011, 4012],
    autoConnect: true,
    offlineQueueSize: 1000,
    recover: true,
    // 'full': each reconnect delay is uniform in [0, the schedule's delay] (issue 19: clients
    // that lost the same server do not come back at the same instant); 'original': the exact
    // schedule of the original connector.
    reconnectJitter: 'full',
    WebSocket: null
  };
  // Close code of a server restart; its reason may carry the delay to wait ("retry=2.734s").
  var RESTART_CODE = 1012;
  var RETRY_HINT = /(?:^|\s)retry=(\d{1,7}(?:\.\d{1,3})?)s(?:\s|$)/;

  /** The retry delay in ms of a 1012 close reason ("... retry=<seconds>s"), or null. */
  function retryHint(reason) {
    var match = RETRY_HINT.exec(typeof reason === 'string' ? reason : '');
    return match ? Math.round(parseFloat(match[1]) * 1000) : null;
  }
  // At most one warning per this many ms about fire-and-forget emits dropped by a full queue.
  var OVERFLOW_LOG_INTERVAL = 10000;
  // Connection state recovery (servers with connection_state_recovery on): the frame a resuming
  // connection sends first, the server's answer, the URL parameter, the position field of frames.
  var RECOVER_EVENT = '_crossws.recover';
  var SESSION_EVENT = '_crossws.session';
  var RECOVER_PARAM = '_crossws_recover';
  var POSITION_FIELD = '_pos';
  var INTERNAL_PREFIX = '_crossws.';
  // Longest wait in ms for the server's answer to a resuming connection before "open" fires anyway.
  var RESUME_WAIT = 3000;

  var monotonicNow = typeof performance !== 'undefined' && performance && typeof performance.now === 'function'
    ? function () { return performance.now(); }
    : function () { return Date.now(); };

  function noop() {}

  function report(where, err) {
    if (typeof console !== 'undefined' && console && typeof console.error === 'function') {
      console.error('[WebSocketConnector] ' + where + ' failed:', err);
    }
  }

  function checkEvent(event) {
    if (!event || typeof event !== 'string') throw new TypeError('event must be a non-empty string');
  }

  function isPositiveNumber(value) {
    return typeof value === 'number' && isFinite(value) && value > 0;
  }

  function isCount(value) {
    return typeof value === 'number' && isFinite(value) && value >= 0 && Math.floor(value) === value;
  }

  /** Turn options.url into an absolute ws:// or wss:// URL; throws TypeError when it cannot. */
  function resolveUrl(url) {
    if (typeof url !== 'string' || !url) {
      throw new TypeError('WebSocketConnector: options.url is required: a ws:// or wss:// URL such as "ws://127.0.0.1:8080/ws"');
    }
    if (/^wss?:\/\//i.test(url)) return url;
    if (/^https?:\/\//i.test(url)) return url.replace(/^http/i, 'ws');
    var page = typeof location !== 'undefined' && location && location.host ? location : null;
    if (page && url.charAt(0) === '/') {
      var scheme = page.protocol === 'https:' ? 'wss:' : 'ws:';
      return url.charAt(1) === '/' ? scheme + url : scheme + '//' + page.host + url;
    }
    throw new TypeError('WebSocketConnector: options.url must start with ws:// or wss:// (got "' + url + '")');
  }

  /**
   * Append customParams to the URL query exactly as the original does (URLSearchParams,
   * String(value), so [1, 2] gives "1,2"), except that undefined values are left out.
   */
  function appendParams(url, params) {
    if (typeof params === 'function') params = params();
    if (!params || typeof params !== 'object' || Array.isArray(params)) return url;
    var query = new URLSearchParams();
    Object.keys(params).forEach(function (key) {
      if (params[key] !== undefined) query.append(key, String(params[key]));
    });
    var text = query.toString();
    if (!text) return url;
    return url + (url.indexOf('?') >= 0 ? '&' : '?') + text;
  }

  function validateOptions(options) {
    resolveUrl(options.url);
    ['pingInterval', 'pongTimeout', 'fastReconnectInterval', 'reconnectMaxInterval', 'callbackTimeout', 'pendingTimeout']
      .forEach(function (name) {
        if (!isPositiveNumber(options[name])) throw new TypeError('WebSocketConnector: options.' + name + ' must be a positive number of milliseconds');
      });
    if (!isCount(options.fastReconnectThreshold)) throw new TypeError('WebSocketConnector: options.fastReconnectThreshold must be an integer >= 0');
    if (options.repeatLimit !== null && options.repeatLimit !== undefined && !isCount(options.repeatLimit)) {
      throw new TypeError('WebSocketConnector: options.repeatLimit must be null or an integer >= 0');
    }
    if (!isCount(options.offlineQueueSize)) throw new TypeError('WebSocketConnector: options.offlineQueueSize must be an integer >= 0 (0 turns the offline queue off)');
    if (!isCount(options.connectTimeout)) throw new TypeError('WebSocketConnector: options.connectTimeout must be milliseconds >= 0 (0 disables it)');
    if (options.reconnectJitter !== 'full' && options.reconnectJitter !== 'original') {
      throw new TypeError("WebSocketConnector: options.reconnectJitter must be 'full' or 'original'");
    }
    if (typeof options.recover !== 'boolean') throw new TypeError('WebSocketConnector: options.recover must be a boolean');
    if (typeof options.pingMsg !== 'string') throw new TypeError('WebSocketConnector: options.pingMsg must be a string');
    if (!Array.isArray(options.noReconnectCodes)) throw new TypeError('WebSocketConnector: options.noReconnectCodes must be an array of close codes');
    if (options.WebSocket !== null && typeof options.WebSocket !== 'function') {
      throw new TypeError('WebSocketConnector: options.WebSocket must be a WebSocket constructor');
    }
    Object.keys(options).forEach(function (name) {
      if (!(name in DEFAULTS) && typeof console !== 'undefined' && console && console.warn) {
        console.warn('[WebSocketConnector] unknown option "' + name + '" is ignored');
      }
    });
  }

  /** Per-call ack timings: undefined/null take the instance default; anything else must be positive. */
  function ackTimings(defaults, options) {
    var callbackTimeout = options.callbackTimeout == null ? defaults.callbackTimeout : options.callbackTimeout;
    var pendingTimeout = options.pendingTimeout == null ? defaults.pendingTimeout : options.pendingTimeout;
    if (!isPositiveNumber(callbackTimeout)) throw new TypeError('"callbackTimeout" must be a positive number of milliseconds');
    if (!isPositiveNumber(pendingTimeout)) throw new TypeError('"pendingTimeout" must be a positive number of milliseconds');
    if (options.onPending != null && typeof options.onPending !== 'function') throw new TypeError('"onPending" must be a function');
    return { callbackTimeout: callbackTimeout, pendingTimeout: pendingTimeout, onPending: options.onPending || null };
  }

  /** on/once/off listener lists in a Map: any event name is safe, once removes only its own entry. */
  function ListenerRegistry() {
    this.map = new Map();
  }

  ListenerRegistry.prototype.add = function (event, listener, once, tag) {
    checkEvent(event);
    if (typeof listener !== 'function') throw new TypeError('listener must be a function');
    var list = this.map.get(event);
    if (!list) this.map.set(event, list = []);
    list.push({ fn: listener, once: once, tag: tag });
  };

  ListenerRegistry.prototype.remove = function (event, listenerOrTag) {
    checkEvent(event);
    var list = this.map.get(event);
    if (!list) return;
    var keep = listenerOrTag === undefined ? [] : list.filter(function (entry) {
      return typeof listenerOrTag === 'function' ? entry.fn !== listenerOrTag : entry.tag !== listenerOrTag;
    });
    if (keep.length) this.map.set(event, keep);
    else this.map.delete(event);
  };

  ListenerRegistry.prototype.emit = function (event, args, self) {
    var list = this.map.get(event);
    if (!list) return;
    var snapshot = list.slice();
    for (var i = 0; i < snapshot.length; i++) {
      var entry = snapshot[i];
      if (entry.once) {
        var current = this.map.get(event) || [];
        var index = current.indexOf(entry);
        if (index < 0) continue;
        current.splice(index, 1);
        if (!current.length) this.map.delete(event);
      }
      try {
        entry.fn.apply(self, args);
      } catch (err) {
        report('"' + event + '" listener', err);
      }
    }
  };

  /**
   * A WebSocket client with heartbeat, reconnection, acks with timeouts and
   * separate lifecycle / server event listeners.
   *
   * @param {Object} options  see DEFAULTS; times are milliseconds.
   * @throws {TypeError} on a missing or invalid url or option.
   */
  function WebSocketConnector(options) {
    if (!(this instanceof WebSocketConnector)) throw new TypeError('WebSocketConnector must be called with new');
    if (options !== undefined && (options === null || typeof options !== 'object')) {
      throw new TypeError('WebSocketConnector: options must be an object');
    }
    this.options = Object.assign({}, DEFAULTS, options);
    validateOptions(this.options);
    this.WebSocketImpl = this.options.WebSocket || findWebSocket();
    if (!this.WebSocketImpl) {
      throw new TypeError('WebSocketConnector: no WebSocket implementation: pass options.WebSocket (for example the "ws" package in Node)');
    }
    this.ws = null;
    this.repeat = 0;
    this.latency = null;
    this.lockReconnect = false;
    this.forbidReconnect = false;
    this.pingGoTime = 0;
    this.pingTimer = null;
    this.pongTimer = null;
    this.reconnectTimer = null;
    this.connectTimer = null;
    this._retryHint = null; // ms: a 1012 close's retry hint, used by the next reconnect()
    this._awaitingPong = false;
    this._lifecycle = new ListenerRegistry();
    this._serverEvents = new ListenerRegistry();
    this._pending = new Map();
    // The offline queue: calls made while a connection is on its way, in call order.
    this._offline = new Map();
    this._queuedCounter = 0;
    this._deciding = false; // an error or close listener runs before the automatic reconnect
    this._erroredSocket = null;
    this._overflowDrops = 0;
    this._overflowLoggedAt = -Infinity;
    this._callbackIdCounter = 0;
    // Connection state recovery: the server's session id, the last [offset, epoch] received in
    // each stream, whether the current connection resumed the session, and the socket that is
    // resuming (open, waiting for the server's answer before "open" fires).
    this._sessionId = null;
    this._positions = {};
    this._recovered = false;
    this._resuming = null;
    this._resumeTimer = null;
    this._resumeEvent = null;
    if (this.options.autoConnect) this.connect();
  }

  WebSocketConnector.LIFECYCLE_EVENTS = LIFECYCLE_EVENTS.slice();
  WebSocketConnector.DEFAULTS = DEFAULTS;

  var proto = WebSocketConnector.prototype;

  // ---- Listeners -------------------------------------------------------

  function registryFor(connector, event) {
    return LIFECYCLE_EVENTS.indexOf(event) >= 0 ? connector._lifecycle : connector._serverEvents;
  }

  /** Listen to a lifecycle event (open, close, ...) or, for any other name, to a server event. */
  proto.on = function (event, listener, tag) {
    checkEvent(event);
    registryFor(this, event).add(event, listener, false, tag);
  };

  /** Like on(), removed after its first call (only this registration). */
  proto.once = function (event, listener, tag) {
    checkEvent(event);
    registryFor(this, event).add(event, listener, true, tag);
  };

  /** Remove all listeners of event, those of one function, or those with one tag. */
  proto.off = function (event, listenerOrTag) {
    checkEvent(event);
    registryFor(this, event).remove(event, listenerOrTag);
  };

  /** Listen to a server-pushed event, even one named like a lifecycle event ("open", "close"...). */
  proto.onServerEvent = function (event, listener, tag) {
    this._serverEvents.add(event, listener, false, tag);
  };

  proto.onceServerEvent = function (event, listener, tag) {
    this._serverEvents.add(event, listener, true, tag);
  };

  proto.offServerEvent = function (event, listenerOrTag) {
    this._serverEvents.remove(event, listenerOrTag);
  };

  proto._emitLifecycle = function (event, arg) {
    this._lifecycle.emit(event, arguments.length > 1 ? [arg] : [], this);
  };

  // ---- Connection ------------------------------------------------------

  /** Whether the socket is open now. */
  Object.defineProperty(proto, 'connected', {
    get: function () { return !!this.ws && this.ws.readyState === OPEN; }
  });

  /** Calls waiting in the offline queue for a connection (expired ones have left it). */
  Object.defineProperty(proto, 'queued', {
    get: function () { return this._offline.size; }
  });

  /**
   * Whether the current connection resumed the server session (connection state recovery): every
   * message missed while away was delivered. False on a first connection and against servers
   * without recovery.
   */
  Object.defineProperty(proto, 'recovered', {
    get: function () { return this._recovered; }
  });

  /** readyState of the current socket, CLOSED (3) when there is none. */
  Object.defineProperty(proto, 'readyState', {
    get: function () { return this.ws ? this.ws.readyState : CLOSED; }
  });

  /**
   * Open the connection (the constructor does it unless autoConnect is false).
   * Also the way back after manualClose(): it re-allows reconnection and resets
   * the attempt counter. Does nothing while a socket is connecting or open.
   */
  proto.connect = function () {
    this.forbidReconnect = false;
    this.repeat = 0;
    this._retryHint = null;
    if (this.ws && (this.ws.readyState === CONNECTING || this.ws.readyState === OPEN)) return;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.lockReconnect = false;
    this._createWebSocket();
  };

  proto._createWebSocket = function () {
    var self = this;
    var ws;
    try {
      var url = appendParams(resolveUrl(this.options.url), this.options.customParams);
      var resume = this.options.recover && this._sessionId !== null;
      if (resume) url += (url.indexOf('?') >= 0 ? '&' : '?') + RECOVER_PARAM + '=1';
      ws = new this.WebSocketImpl(url);
      this._resuming = resume ? ws : null;
    } catch (err) {
      this._emitLifecycle('error', { type: 'error', message: String(err && err.message || err), error: err });
      this.reconnect();
      return;
    }
    this.ws = ws;
    try {
      ws.binaryType = 'arraybuffer';
    } catch (err) { /* not settable in some implementations */ }
    ws.onopen = function (event) { if (self.ws === ws) self._onOpen(event); };
    ws.onmessage = function (event) { if (self.ws === ws) self._onMessage(event); };
    ws.onerror = function (event) { if (self.ws === ws) self._onError(event); };
    ws.onclose = function (event) { if (self.ws === ws) self._onClose(event); };
    if (this.options.connectTimeout > 0) {
      this.connectTimer = setTimeout(function () { self._onConnectTimeout(ws); }, this.options.connectTimeout);
    }
  };

  /** Detach and close the current socket without any local event; fail pending acks. */
  proto._dropSocket = function (code, reason) {
    var ws = this.ws;
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = null;
    this._cancelResume();
    this._heartReset();
    if (ws) {
      this.ws = null;
      ws.onopen = ws.onmessage = ws.onclose = null;
      // The "ws" package emits "error" after close() on a CONNECTING socket: keep a
      // listener so that Node does not crash on an unhandled "error" event.
      ws.onerror = noop;
      if (ws.readyState === CONNECTING || ws.readyState === OPEN) {
        try {
          ws.close(code, reason);
        } catch (err) { /* already closing */ }
      }
    }
    this._failPending();
    return ws;
  };

  /** Drop the socket and fire a local close event now, without waiting for the close handshake. */
  proto._closeLocally = function (code, reason, wasClean) {
    var ws = this._dropSocket(code, reason);
    if (!ws) return;
    this._closed({ type: 'close', code: code, reason: reason, wasClean: wasClean, target: ws });
  };

  /** After the socket is dropped: the close event, then the automatic reconnect, if any. */
  proto._closed = function (event) {
    var code = event && event.code;
    // A restarting server says when to come back (each client its own time): the next
    // reconnect waits that long instead of the schedule.
    this._retryHint = code === RESTART_CODE ? retryHint(event.reason) : null;
    // Calls made in close listeners queue when a reconnect follows them.
    this._deciding = this._willAutoReconnect(code);
    try {
      this._emitLifecycle('close', event);
    } finally {
      this._deciding = false;
    }
    if (this._willAutoReconnect(code)) this.reconnect();
    this._dropOfflineIfIdle('no reconnect after close ' + code);
  };

  proto._willAutoReconnect = function (code) {
    var limit = this.options.repeatLimit;
    if (!this.options.autoReconnect || this.forbidReconnect || this.ws) return false;
    if (this.options.noReconnectCodes.indexOf(code) >= 0) return false;
    return !(typeof limit === 'number' && limit <= this.repeat);
  };

  proto._onOpen = function (event) {
    var self = this;
    var ws = this.ws;
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = null;
    this._recovered = false;
    if (ws === this._resuming && this._sessionId !== null) {
      // Resuming: the request goes first, before the offline queue; "open" fires with the answer.
      ws.send(JSON.stringify({ event: RECOVER_EVENT, payload: { sid: this._sessionId, pos: this._positions } }));
      var connectTimeout = this.options.connectTimeout;
      var wait = connectTimeout > 0 ? Math.min(connectTimeout, RESUME_WAIT) : RESUME_WAIT;
      this._resumeEvent = event;
      this._resumeTimer = setTimeout(function () {
        self._resumeTimer = null;
        self._resumed(ws, false);
      }, wait);
      return;
    }
    this._opened(event);
  };

  /** The server answered a resuming connection (or did not in time): now it opens. */
  proto._resumed = function (ws, recovered) {
    if (this.ws !== ws || this._resuming !== ws) return;
    var event = this._resumeEvent;
    this._cancelResume();
    this._recovered = recovered;
    if (!recovered) this._positions = {};
    this._opened(event);
  };

  proto._cancelResume = function () {
    if (this._resumeTimer) clearTimeout(this._resumeTimer);
    this._resumeTimer = null;
    this._resumeEvent = null;
  };

  proto._opened = function (event) {
    this._resuming = null;
    this._flushOffline();
    if (event && typeof event === 'object') {
      try {
        event.recovered = this._recovered;
      } catch (err) { /* a frozen event object */ }
    }
    this._emitLifecycle('open', event);
    this.repeat = 0;
    this._heartCheck();
  };

  /** The server's session frame: keep its id; it answers a resuming connection. */
  proto._onSession = function (payload) {
    if (!payload || typeof payload !== 'object' || Array.isArray(payload)) return;
    if (typeof payload.sid === 'string' && payload.sid) this._sessionId = payload.sid;
    if (this._resumeTimer && this.ws === this._resuming) this._resumed(this.ws, payload.recovered === true);
  };

  /** Keep the last [offset, epoch] received in the stream of a recoverable frame. */
  proto._notePosition = function (position) {
    if (!Array.isArray(position) || position.length !== 3) return;
    var stream = position[0];
    var offset = position[1];
    var epoch = position[2];
    if (typeof stream !== 'string' || typeof epoch !== 'string' || typeof offset !== 'number' || Math.floor(offset) !== offset) return;
    this._positions[stream] = [offset, epoch];
  };

  proto._onClose = function (event) {
    this._dropSocket();
    this._closed(event);
  };

  proto._onError = function (event) {
    // As the original, an error reconnects; calls made in error listeners queue meanwhile.
    // The socket will not open any more, even if it still says CONNECTING (Node's WebSocket).
    this._erroredSocket = this.ws;
    this._deciding = true;
    try {
      this._emitLifecycle('error', event);
    } finally {
      this._deciding = false;
    }
    this.reconnect();
  };

  proto._onConnectTimeout = function (ws) {
    this.connectTimer = null;
    if (this.ws !== ws || ws.readyState !== CONNECTING) return;
    var message = 'WebSocket connect timeout after ' + this.options.connectTimeout + ' ms';
    this._emitLifecycle('error', { type: 'error', code: 'CONNECT_TIMEOUT', message: message });
    if (this.ws === ws) this.reconnect();
    // reconnect() left it alone (repeat limit reached or reconnection forbidden): end it here.
    if (this.ws === ws) this._closeLocally(1006, 'connect timeout', false);
  };

  proto._onMessage = function (event) {
    if (!event || event.data === undefined) return;
    var data = event.data;
    // 'message' gets what arrived: a string for text, an ArrayBuffer for binary. A binary message
    // that holds UTF-8 text is then handled as text (heartbeat, events, acks), as the original's
    // toString() does; other bytes are for the application only.
    this._emitLifecycle('message', data);
    if (typeof data !== 'string') {
      if (typeof ArrayBuffer === 'undefined' || !(data instanceof ArrayBuffer) || typeof TextDecoder === 'undefined') return;
      try {
        data = new TextDecoder('utf-8', { fatal: true }).decode(data);
      } catch (err) {
        return;
      }
    }
    if (data === this.options.pingMsg) {
      // Only the echo of our own ping is a pong; an unsolicited copy is ignored.
      if (!this._awaitingPong) return;
      this.latency = Math.round((monotonicNow() - this.pingGoTime) * 100) / 100;
      this._emitLifecycle('pong', this.latency);
      this._heartCheck();
      return;
    }
    this._handleMessage(data);
  };

  proto._handleMessage = function (text) {
    var message;
    try {
      message = JSON.parse(text);
    } catch (err) {
      return;
    }
    if (!message || typeof message !== 'object' || Array.isArray(message)) return;
    if (typeof message.event === 'string' && message.event.indexOf(INTERNAL_PREFIX) === 0) {
      // The library's own frames: never dispatched to listeners.
      if (message.event === SESSION_EVENT) this._onSession(message.payload);
      return;
    }
    if (Object.prototype.hasOwnProperty.call(message, POSITION_FIELD)) this._notePosition(message[POSITION_FIELD]);
    if (message.callbackId) {
      // An ack: never dispatched as an event, unknown or late ids are ignored.
      var entry = typeof message.callbackId === 'string' ? this._pending.get(message.callbackId) : undefined;
      if (entry) this._settle(message.callbackId, entry, true, message.payload);
      return;
    }
    if (typeof message.event === 'string' && message.event) {
      var args = [message.payload];
      // A server request (ours): listeners get reply(data) as their second argument.
      var ackId = message.ackId;
      if (typeof ackId === 'string' && ackId.length > 0 && ackId.length <= 64) args.push(this._makeReply(ackId));
      this._serverEvents.emit(message.event, args, this);
    }
  };

  /** reply(data) for the server request ackId: answers once, on the socket it came on; returns whether it was sent. */
  proto._makeReply = function (ackId) {
    var ws = this.ws;
    var used = false;
    return function reply(data) {
      if (used) return false;
      var text = JSON.stringify(data === undefined ? { ackId: ackId } : { ackId: ackId, payload: data });
      used = true;
      if (!ws || ws.readyState !== OPEN) return false;
      ws.send(text);
      return true;
    };
  };

  // ---- Reconnection ----------------------------------------------------

  /**
   * Delay in ms before attempt number repeat: the original's schedule, or with
   * reconnectJitter 'full' a uniform draw in [0, its delay without its own random term].
   */
  proto._reconnectDelay = function (repeat) {
    var o = this.options;
    if (o.reconnectJitter === 'full') {
      var ceiling = repeat <= o.fastReconnectThreshold ? o.fastReconnectInterval
        : Math.min(Math.pow(2, Math.min(repeat - o.fastReconnectThreshold, 64)) * o.fastReconnectInterval,
          o.reconnectMaxInterval);
      return Math.floor(Math.random() * ceiling);
    }
    if (repeat <= o.fastReconnectThreshold) return o.fastReconnectInterval;
    var base = Math.pow(2, repeat - o.fastReconnectThreshold) * o.fastReconnectInterval;
    var delay = Math.min(base + Math.random() * o.fastReconnectInterval, o.reconnectMaxInterval);
    return Math.floor(Math.max(delay, o.fastReconnectInterval));
  };

  /**
   * Schedule a new connection attempt (closing the current socket with 4001, no
   * local close event). Emits "reconnect" {repeat, timeout} or "repeat-limit".
   * @param {boolean} [repeatReset=false] reset the attempt counter first.
   */
  proto.reconnect = function (repeatReset) {
    var self = this;
    var limit = this.options.repeatLimit;
    this._heartReset();
    if (repeatReset) this.repeat = 0;
    if (this.lockReconnect || this.forbidReconnect) return;
    if (typeof limit === 'number' && limit <= this.repeat) {
      this._emitLifecycle('repeat-limit', limit);
      this._dropOfflineIfIdle('repeat limit reached');
      return;
    }
    if (this.ws) this._dropSocket(MANUAL_CLOSE_CODE, MANUAL_CLOSE_REASON);
    this.lockReconnect = true;
    this.repeat++;
    var hint = this._retryHint;
    this._retryHint = null;
    var timeout = hint !== null && hint !== undefined ? Math.min(hint, this.options.reconnectMaxInterval)
      : this._reconnectDelay(this.repeat);
    this._emitLifecycle('reconnect', { repeat: this.repeat, timeout: timeout });
    if (this.forbidReconnect || !this.lockReconnect) return; // a listener called manualClose() or connect()
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(function () {
      self.reconnectTimer = null;
      self.lockReconnect = false;
      self._createWebSocket();
    }, timeout);
  };

  /** True from the first scheduled attempt until the next successful open. */
  proto.reconnecting = function () {
    return this.repeat > 0;
  };

  /**
   * Close for good: no reconnection until connect() is called. Fires the local
   * "close" event with code 4001 when a socket was connecting or open, and fails
   * pending acks with errorCode CONNECTION_CLOSED, queued calls with OFFLINE_QUEUE_DROPPED.
   */
  proto.manualClose = function () {
    this.forbidReconnect = true;
    this.lockReconnect = false;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this._heartReset();
    this._dropOffline('manual close');
    this._failPending();
    this._closeLocally(MANUAL_CLOSE_CODE, MANUAL_CLOSE_REASON, true);
  };

  // ---- Heartbeat -------------------------------------------------------

  proto._heartCheck = function () {
    this._heartReset();
    this._heartStart();
  };

  proto._heartStart = function () {
    var self = this;
    if (this.forbidReconnect || !this.connected) return;
    this.pingTimer = setTimeout(function () {
      self.pingTimer = null;
      if (!self.connected) return;
      self._emitLifecycle('ping');
      if (!self.connected || self.pingTimer || self.pongTimer) return; // a listener closed or re-armed
      self.pingGoTime = monotonicNow();
      self._awaitingPong = true;
      self.ws.send(self.options.pingMsg);
      self.pongTimer = setTimeout(function () {
        self.pongTimer = null;
        self._awaitingPong = false;
        self._emitLifecycle('pong-timeout');
        if (self.connected) self._closeLocally(4002, 'pong timeout', false);
      }, self.options.pongTimeout);
    }, this.options.pingInterval);
  };

  proto._heartReset = function () {
    if (this.pingTimer) clearTimeout(this.pingTimer);
    if (this.pongTimer) clearTimeout(this.pongTimer);
    this.pingTimer = this.pongTimer = null;
    this._awaitingPong = false;
  };

  /**
   * @param {number} newInterval positive, in ms.
   * @param {boolean} [immediate=false] re-arm the heartbeat now (only when connected).
   * @throws {TypeError} when newInterval is not a positive number.
   */
  proto.setPingInterval = function (newInterval, immediate) {
    if (!isPositiveNumber(newInterval)) throw new TypeError('pingInterval must be a positive number');
    this.options.pingInterval = newInterval;
    if (immediate && this.connected) this._heartCheck();
  };

  proto.getPingInterval = function () {
    return this.options.pingInterval;
  };

  // ---- Sending and acks ------------------------------------------------

  proto._generateCallbackId = function () {
    this._callbackIdCounter += 1;
    return Date.now().toString(36) + '-' + Math.random().toString(36).substring(2, 6) + '-' + this._callbackIdCounter.toString(36);
  };

  /**
   * Wait for the ack of callbackId in table (the pending acks, or the offline queue while the
   * call waits for a connection; it moves between them with its timers running, so its
   * timeout counts from the call). kind: 'callback', 'promise', or 'none' (a queued
   * fire-and-forget emit, which its timeout only expires).
   */
  proto._register = function (table, callbackId, kind, fn, timings) {
    var self = this;
    var entry = { kind: kind, fn: fn, timer: null, pendingTimer: null, table: table, text: null };
    entry.timer = setTimeout(function () {
      var text = kind === 'callback' ? 'Is callback timeout: ' : 'Is promise callback timeout: ';
      self._settle(callbackId, entry, false, { error: text + callbackId, errorCode: 'CALLBACK_TIMEOUT', callbackId: callbackId });
    }, timings.callbackTimeout);
    if (timings.onPending && timings.pendingTimeout < timings.callbackTimeout) {
      entry.pendingTimer = setTimeout(function () {
        entry.pendingTimer = null;
        try {
          timings.onPending();
        } catch (err) {
          report('onPending', err);
        }
      }, timings.pendingTimeout);
    }
    table.set(callbackId, entry);
    return entry;
  };

  /** Deliver an ack (ok) or an error to a pending entry, exactly once. */
  proto._settle = function (callbackId, entry, ok, value) {
    if (entry.table.get(callbackId) !== entry) return;
    entry.table.delete(callbackId);
    clearTimeout(entry.timer);
    if (entry.pendingTimer) clearTimeout(entry.pendingTimer);
    if (entry.kind === 'none') return;
    if (entry.kind === 'promise') {
      entry.fn(ok ? { success: true, data: value } : Object.assign({ success: false }, value));
      return;
    }
    try {
      if (ok) entry.fn(null, value);
      else entry.fn(value, null);
    } catch (err) {
      report('emit callback', err);
    }
  };

  proto._failPending = function () {
    this._failAll(this._pending, 'CONNECTION_CLOSED', 'Connection closed before the reply: ');
  };

  proto._failAll = function (table, errorCode, message) {
    var self = this;
    if (!table.size) return;
    Array.from(table.entries()).forEach(function (item) {
      self._settle(item[0], item[1], false, { error: message + item[0], errorCode: errorCode, callbackId: item[0] });
    });
  };

  // ---- The offline queue -----------------------------------------------

  /** Whether a connection is on its way: connecting, a reconnect scheduled, or about to be. */
  proto._opening = function () {
    if (this.forbidReconnect) return false;
    var ws = this.ws;
    return this.lockReconnect || this._deciding || !!this._resumeTimer ||
      (!!ws && ws.readyState === CONNECTING && ws !== this._erroredSocket);
  };

  /**
   * Send a frame now when open; queue it while a connection is on its way (unless the queue is
   * full: OFFLINE_QUEUE_FULL); else fail at once with WS_NOT_OPEN. kind is 'callback',
   * 'promise' or null (fire-and-forget, which expires after options.callbackTimeout when queued,
   * or is dropped with a warning when the queue is full). Returns whether it was sent now.
   */
  proto._send = function (text, callbackId, kind, fn, timings) {
    if (this.connected && !this._resumeTimer) {
      if (kind) this._register(this._pending, callbackId, kind, fn, timings);
      this.ws.send(text);
      return true;
    }
    var size = this.options.offlineQueueSize;
    var failure = null;
    if (size === 0 || !this._opening()) {
      failure = { error: 'WebSocket is not open', errorCode: 'WS_NOT_OPEN' };
    } else if (this._offline.size >= size) {
      failure = { error: 'Offline queue full (' + size + ' calls waiting for the connection): not sent', errorCode: 'OFFLINE_QUEUE_FULL' };
    }
    if (failure) {
      if (kind === 'callback') fn(failure, null); // synchronously, before emit() returns
      else if (kind === 'promise') fn(Object.assign({ success: false }, failure));
      else if (failure.errorCode === 'OFFLINE_QUEUE_FULL') this._overflowed();
      return false;
    }
    if (!kind) {
      kind = 'none';
      callbackId = 'queued-' + (++this._queuedCounter);
      timings = { callbackTimeout: this.options.callbackTimeout, pendingTimeout: this.options.pendingTimeout, onPending: null };
    }
    this._register(this._offline, callbackId, kind, fn, timings).text = text;
    return false;
  };

  /**
   * Send the offline queue on the socket that just opened, in call order, before the open
   * listeners run (so before anything emitted after the open). Each ack moves to the pending
   * acks with its deadline kept; expired calls have left the queue already and are never sent.
   * The recovery request of a resuming connection precedes it (see _onOpen).
   */
  proto._flushOffline = function () {
    var self = this;
    Array.from(this._offline.entries()).forEach(function (item) {
      var callbackId = item[0];
      var entry = item[1];
      if (!self.connected || self._offline.get(callbackId) !== entry) return;
      self._offline.delete(callbackId);
      if (entry.kind === 'none') {
        clearTimeout(entry.timer);
      } else {
        entry.table = self._pending;
        self._pending.set(callbackId, entry);
      }
      self.ws.send(entry.text);
    });
  };

  /** Fail every queued call with OFFLINE_QUEUE_DROPPED: no connection will come. */
  proto._dropOffline = function (why) {
    this._failAll(this._offline, 'OFFLINE_QUEUE_DROPPED', 'Not sent, the offline queue was dropped (' + why + '): ');
  };

  proto._dropOfflineIfIdle = function (why) {
    if (this._offline.size && !this.connected && !this._opening()) this._dropOffline(why);
  };

  proto._overflowed = function () {
    var now = monotonicNow();
    this._overflowDrops += 1;
    if (now - this._overflowLoggedAt < OVERFLOW_LOG_INTERVAL) return;
    if (typeof console !== 'undefined' && console && typeof console.warn === 'function') {
      console.warn('[WebSocketConnector] offline queue full (' + this.options.offlineQueueSize + ' calls): dropped ' +
        this._overflowDrops + ' fire-and-forget emits');
    }
    this._overflowDrops = 0;
    this._overflowLoggedAt = now;
  };

  /**
   * Send {"event", "payload"[, "callbackId"]}. While a connection is on its way (connecting,
   * or a reconnect coming) the call waits in the offline queue and is sent in call order once
   * it opens; after manualClose(), or when no attempt will come, it fails at once. With a
   * callback, it is called once as callback(null, payload) on the ack, or
   * callback({error, errorCode}, null) on WS_NOT_OPEN or OFFLINE_QUEUE_FULL (synchronously),
   * CALLBACK_TIMEOUT (callbackTimeout counted from the call, queued or not; an expired queued
   * call is never sent), CONNECTION_CLOSED or OFFLINE_QUEUE_DROPPED (manualClose, no more
   * attempts). A queued fire-and-forget emit expires unsent after options.callbackTimeout.
   *
   * @param {string} event non-empty.
   * @param {*} data any JSON value except null/undefined.
   * @param {function} [callback]
   * @param {Object} [options] callbackTimeout, pendingTimeout (ms), onPending().
   * @returns {boolean} whether the frame was sent now (false when queued, see queued).
   * @throws {TypeError|Error} on a bad event, data, callback or option.
   */
  proto.emit = function (event, data, callback, options) {
    checkEvent(event);
    if (data === null || data === undefined) throw new Error('emit: data cannot be null or undefined');
    if (callback != null && typeof callback !== 'function') throw new TypeError('callback must be a function');
    var timings = callback ? ackTimings(this.options, options || {}) : null;
    var message = { event: event, payload: data };
    var callbackId = callback ? (message.callbackId = this._generateCallbackId()) : null;
    var text = JSON.stringify(message);
    return this._send(text, callbackId, callback ? 'callback' : null, callback, timings);
  };

  /**
   * Send one raw message outside the JSON event protocol: a string as text, an ArrayBuffer or a
   * typed array as binary. Returns false when not connected.
   */
  proto.send = function (data) {
    if (typeof data !== 'string' && !(typeof ArrayBuffer !== 'undefined' && (data instanceof ArrayBuffer || ArrayBuffer.isView(data)))) {
      throw new TypeError('send() takes a string, an ArrayBuffer or a typed array');
    }
    if (!this.connected) return false;
    this.ws.send(data);
    return true;
  };

  /**
   * Like emit() with a callback, as a Promise that always resolves (never rejects)
   * to {success: true, data} or {success: false, error, errorCode}; queued like emit().
   */
  proto.emitWithPromise = function (event, data, options) {
    var self = this;
    return new Promise(function (resolve) {
      if (!event || typeof event !== 'string') return resolve({ success: false, error: 'No event provided in emitWithPromise' });
      if (data === null || data === undefined) return resolve({ success: false, error: 'Data cannot be null or undefined' });
      var timings, text, callbackId;
      try {
        timings = ackTimings(self.options, options || {});
        callbackId = self._generateCallbackId();
        text = JSON.stringify({ event: event, payload: data, callbackId: callbackId });
      } catch (err) {
        return resolve({ success: false, error: String(err && err.message || err), errorCode: 'INVALID_ARGUMENT' });
      }
      self._send(text, callbackId, 'promise', resolve, timings);
    });
  };

  return WebSocketConnector;
}
// @@core-end
);
