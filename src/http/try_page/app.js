/*
 * facecompare try page. Plain script, no framework, no build step.
 * Every URL is relative to the page, so the page works on a sub-path behind a
 * reverse proxy. The API key stays in this tab (a variable and sessionStorage)
 * and is sent only in the x-api-key header of the two calls below.
 */
(function () {
  'use strict';

  var COMPARE_URL = 'v1/face/compare';
  var DETECT_URL = 'v1/face/detect';
  var KEY_SLOT = 'facecompare.apiKey';
  var SIDES = ['source', 'target'];
  var NAMES = { source: 'selfie', target: 'ID photo' };

  function $(id) { return document.getElementById(id); }

  var files = { source: null, target: null };
  var previews = { source: null, target: null };
  var apiKey = '';
  var stream = null;
  var running = false;

  /* ---- the key: a variable, mirrored in sessionStorage when allowed ---- */
  function loadKey() {
    try { apiKey = window.sessionStorage.getItem(KEY_SLOT) || ''; } catch (e) { apiKey = ''; }
    $('key').value = apiKey;
  }
  function saveKey(value) {
    apiKey = value.trim();
    try {
      if (apiKey) { window.sessionStorage.setItem(KEY_SLOT, apiKey); } else { window.sessionStorage.removeItem(KEY_SLOT); }
    } catch (e) { /* storage refused: the variable still holds it */ }
  }

  /* ---- choosing photos ---- */
  function setFile(side, file) {
    if (!file) { return; }
    files[side] = file;
    if (previews[side]) { URL.revokeObjectURL(previews[side]); }
    previews[side] = URL.createObjectURL(file);
    $(side + '-img').src = previews[side];
    $(side + '-frame').hidden = false;
    clearBoxes(side);
    $(side + '-faces').textContent = file.name ? 'Chosen: ' + file.name : '';
    $(side + '-quality').textContent = '';
    $('result').hidden = true;
    hideError();
  }

  function clearBoxes(side) {
    var svg = $(side + '-boxes');
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    svg.removeAttribute('data-count');
  }

  function wireSide(side) {
    var input = $(side + '-file');
    input.addEventListener('change', function () {
      if (input.files && input.files[0]) { setFile(side, input.files[0]); }
    });
    var drop = $(side + '-drop');
    drop.addEventListener('dragover', function (ev) {
      ev.preventDefault();
      drop.classList.add('over');
    });
    drop.addEventListener('dragleave', function () { drop.classList.remove('over'); });
    drop.addEventListener('drop', function (ev) {
      ev.preventDefault();
      drop.classList.remove('over');
      var dt = ev.dataTransfer;
      if (dt && dt.files && dt.files[0]) { setFile(side, dt.files[0]); }
    });
  }

  /* ---- the camera (optional: needs HTTPS or localhost) ---- */
  function stopCamera() {
    if (stream) { stream.getTracks().forEach(function (t) { t.stop(); }); }
    stream = null;
    $('camera-video').srcObject = null;
    $('camera').hidden = true;
  }

  async function openCamera() {
    hideError();
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showMessage('The camera is not available here: browsers allow it only on HTTPS pages (or localhost). Choose a file instead.');
      return;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'user', width: { ideal: 1280 } }, audio: false });
    } catch (e) {
      showMessage('The camera could not be opened (' + (e && e.name ? e.name : 'error') + '). Choose a file instead.');
      return;
    }
    $('camera-video').srcObject = stream;
    $('camera').hidden = false;
    $('camera-shoot').focus();
  }

  function shoot() {
    var video = $('camera-video');
    if (!video.videoWidth) { return; }
    var canvas = document.createElement('canvas');
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext('2d').drawImage(video, 0, 0);
    canvas.toBlob(function (blob) {
      stopCamera();
      if (blob) { setFile('source', new File([blob], 'camera-selfie.jpg', { type: 'image/jpeg' })); }
      $('camera-open').focus();
    }, 'image/jpeg', 0.92);
  }

  /* ---- calling the API ---- */
  async function post(url, fill) {
    var form = new FormData();
    fill(form);
    var r = await fetch(url, {
      method: 'POST',
      headers: { 'x-api-key': apiKey },
      body: form,
      credentials: 'omit',
      cache: 'no-store',
      referrerPolicy: 'no-referrer'
    });
    var text = await r.text();
    var body = null;
    try { body = JSON.parse(text); } catch (e) { body = null; }
    return {
      ok: r.ok,
      status: r.status,
      body: body,
      text: text,
      retryAfter: r.headers.get('retry-after'),
      requestId: r.headers.get('x-request-id')
    };
  }

  function fileName(side) {
    return files[side].name || side + '.jpg';
  }

  async function run() {
    if (running) { return; }
    hideError();
    $('result').hidden = true;
    saveKey($('key').value);
    if (!apiKey) { return showMessage('Paste your API key first.', $('key')); }
    if (!files.source) { return showMessage('Choose the selfie (source) first.', $('source-file')); }
    if (!files.target) { return showMessage('Choose the ID photo (target) first.', $('target-file')); }
    busy(true);
    SIDES.forEach(function (side) {
      clearBoxes(side);
      $(side + '-faces').textContent = '';
      $(side + '-quality').textContent = '';
    });
    try {
      /* The outlines come from the uncharged detect calls, made alongside
         the compare; they add nothing to its cost. */
      var compare = post(COMPARE_URL, function (f) {
        f.append('source', files.source, fileName('source'));
        f.append('target', files.target, fileName('target'));
      });
      var detects = SIDES.map(function (side) {
        return post(DETECT_URL, function (f) { f.append('image', files[side], fileName(side)); })
          .catch(function (e) { return { ok: false, status: 0, body: null, text: String(e) }; });
      });
      var answer = await compare;
      if (!answer.ok) {
        showApiError(answer);
      } else if (!answer.body || typeof answer.body.isMatch !== 'boolean') {
        showMessage('The server answered something unexpected: ' + answer.text.slice(0, 200));
      } else {
        showResult(answer.body);
      }
      var outlines = await Promise.all(detects);
      SIDES.forEach(function (side, i) { drawFaces(side, outlines[i]); showQuality(side, outlines[i]); });
      if (answer.ok) { $('result').focus(); }
    } catch (e) {
      showMessage('The server could not be reached: ' + (e && e.message ? e.message : e));
    } finally {
      busy(false);
    }
  }

  function busy(on) {
    running = on;
    $('submit').disabled = on;
    $('form').setAttribute('aria-busy', on ? 'true' : 'false');
    $('status').textContent = on ? 'Comparing…' : '';
  }

  /* ---- showing the answer ---- */
  function fmt(n) {
    return typeof n === 'number' ? String(n) : '—';
  }

  function reading(r) {
    var c = fmt(r.confidence);
    var t = fmt(r.threshold);
    if (!r.sourceFaceDetected && !r.targetFaceDetected) {
      return ['no-face-both', 'No face found in either photo',
        'Retake your selfie and retake the ID photo: each needs one clear, well-lit face looking at the camera.'];
    }
    if (!r.sourceFaceDetected) {
      return ['no-face-source', 'No face found in the selfie',
        'Retake your selfie: face the camera in even light, with your whole face in the frame and nothing covering it.'];
    }
    if (!r.targetFaceDetected) {
      return ['no-face-target', 'No face found in the ID photo',
        'Retake the ID photo: lay the document flat, fill the frame with it, and avoid glare on the portrait.'];
    }
    if (r.isMatch) {
      return ['match', 'Match: the same person',
        'Confidence ' + c + ' is at or above the threshold of ' + t + ', so isMatch is true.'];
    }
    return ['no-match', 'No match: these faces do not match',
      'Both faces were found, but confidence ' + c + ' is below the threshold of ' + t + ', so isMatch is false.'];
  }

  function showResult(r) {
    var read = reading(r);
    var section = $('result');
    section.setAttribute('data-outcome', read[0]);
    $('verdict').textContent = read[1];
    $('advice').textContent = read[2];
    ['isMatch', 'confidence', 'threshold', 'sourceFaceDetected', 'targetFaceDetected'].forEach(function (k) {
      $('f-' + k).textContent = String(r[k]);
    });
    $('threshold-note').textContent = 'The threshold in force for your organisation is ' + fmt(r.threshold) +
      ' (0–100); isMatch is confidence ≥ threshold. Confidence is a calibrated similarity: photos of the same ' +
      'person mostly score above 95, different people mostly below 20, and it is 0 when a photo has no face.';
    section.hidden = false;
  }

  function drawFaces(side, det) {
    var caption = $(side + '-faces');
    caption.textContent = '';
    if (!det.ok || !det.body || !Array.isArray(det.body.faces)) {
      var why = det.body && det.body.message ? det.body.message : 'HTTP ' + det.status;
      caption.textContent = 'Outlines unavailable: ' + why;
      return;
    }
    var faces = det.body.faces;
    var svg = $(side + '-boxes');
    faces.forEach(function (f, i) {
      var rect = document.createElementNS(svg.namespaceURI, 'rect');
      rect.setAttribute('x', f.left);
      rect.setAttribute('y', f.top);
      rect.setAttribute('width', f.width);
      rect.setAttribute('height', f.height);
      /* The source compares its largest face (the first); the target
         compares every face it has. */
      rect.setAttribute('class', side === 'source' && i > 0 ? 'other' : 'compared');
      svg.appendChild(rect);
    });
    svg.setAttribute('data-count', String(faces.length));
    var n = faces.length;
    var text;
    if (n === 0) {
      text = 'No face found in the ' + NAMES[side] + '.';
    } else if (side === 'source') {
      text = n === 1 ? '1 face found; it was compared.'
        : n + ' faces found; the largest (solid outline) was compared.';
    } else {
      text = n === 1 ? '1 face found; it was compared.'
        : n + ' faces found; each was compared with the selfie and the best similarity counts.';
    }
    if (n > 0) { caption.appendChild(swatch('')); }
    caption.appendChild(document.createTextNode(text));
    if (side === 'source' && n > 1) {
      caption.appendChild(document.createTextNode(' '));
      caption.appendChild(swatch('other'));
      caption.appendChild(document.createTextNode('dashed: not compared.'));
    }
  }

  /* Retake hints: what keeps the compared face (the largest) from
     QualityFilter HIGH, as the detect call names it (docs/quality.md). */
  var HINTS = {
    too_dark: function (n) { return 'The ' + n + ' is too dark: light the face evenly.'; },
    too_bright: function (n) { return 'The ' + n + ' is over-exposed: avoid a flash or direct light on the face.'; },
    blurred: function (n) { return 'The ' + n + ' is blurred: hold the camera still and let it focus.'; },
    too_small: function (n) { return 'The face is too small in the ' + n + ': move closer or use a larger scan.'; },
    turned: function (n) { return 'In the ' + n + ', the face should look straight at the camera.'; }
  };

  function showQuality(side, det) {
    var box = $(side + '-quality');
    box.textContent = '';
    var faces = det.ok && det.body && Array.isArray(det.body.faces) ? det.body.faces : [];
    var problems = faces.length && Array.isArray(faces[0].problems) ? faces[0].problems : [];
    var lines = problems.filter(function (p) { return HINTS[p]; })
      .map(function (p) { return HINTS[p](NAMES[side]); });
    box.textContent = lines.join(' ');
    box.setAttribute('data-problems', problems.join(' '));
  }

  function swatch(kind) {
    var s = document.createElement('span');
    s.className = kind ? 'swatch ' + kind : 'swatch';
    s.setAttribute('aria-hidden', 'true');
    return s;
  }

  /* ---- errors ---- */
  function hideError() {
    var box = $('error');
    box.hidden = true;
    box.textContent = '';
  }

  function showMessage(text, focus) {
    var box = $('error');
    box.textContent = text;
    box.hidden = false;
    if (focus) { focus.focus(); }
  }

  var ADVICE = {
    401: 'Check the API key.',
    402: 'The organisation has too few tokens; an operator can add some (facecompare tokens add).',
    413: 'The photos are too large; the limit is 15 MB each.',
    429: 'Too many requests for this organisation.',
    503: 'The server is busy; retry shortly.'
  };

  function showApiError(r) {
    var b = r.body || {};
    var box = $('error');
    box.textContent = '';
    var head = document.createElement('strong');
    head.textContent = (b.error || 'HTTP ' + r.status) + ' (' + r.status + ')';
    box.appendChild(head);
    var message = b.message || r.text.slice(0, 300) || 'no message';
    box.appendChild(document.createTextNode(': ' + message));
    var extra = ADVICE[r.status] || '';
    if (r.retryAfter) { extra += ' Retry in ' + r.retryAfter + ' s.'; }
    if (extra) {
      var p = document.createElement('p');
      p.textContent = extra.trim();
      box.appendChild(p);
    }
    var id = b.requestId || r.requestId;
    if (id) {
      var small = document.createElement('p');
      small.className = 'help';
      small.textContent = 'Request id: ' + id;
      box.appendChild(small);
    }
    box.hidden = false;
  }

  /* ---- start ---- */
  function start() {
    loadKey();
    $('key').addEventListener('input', function () { saveKey($('key').value); });
    $('forget-key').addEventListener('click', function () {
      saveKey('');
      $('key').value = '';
      $('key').focus();
    });
    SIDES.forEach(wireSide);
    $('camera-open').addEventListener('click', openCamera);
    $('camera-shoot').addEventListener('click', shoot);
    $('camera-cancel').addEventListener('click', function () { stopCamera(); $('camera-open').focus(); });
    $('camera').addEventListener('keydown', function (ev) {
      if (ev.key === 'Escape') { stopCamera(); $('camera-open').focus(); }
    });
    $('form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      run();
    });
    /* Dropping a file elsewhere must not navigate away from the page. */
    window.addEventListener('dragover', function (ev) { ev.preventDefault(); });
    window.addEventListener('drop', function (ev) { ev.preventDefault(); });
  }

  start();
}());
