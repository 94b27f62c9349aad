// llamacy web front end: chat (/v1/chat/completions) and raw completion (/completion).
//
// Model output is only ever written with textContent / Text nodes, never as HTML.

import { llama, chat, llamaModelInfo } from './completion.js';

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------
// Persistent state
// ---------------------------------------------------------------------------

const STORAGE_SETTINGS = 'llamacy.settings';        // localStorage
const STORAGE_CONVERSATION = 'llamacy.conversation'; // localStorage
const STORAGE_API_KEY = 'llamacy.api_key';           // sessionStorage

// Defaults for the settings panel, as input strings. An empty numeric field
// means "not sent" (the server's default applies).
const DEFAULT_SETTINGS = {
  system_prompt: '',
  temperature: '0.8',
  top_k: '40',
  top_p: '0.95',
  min_p: '0.05',
  n_predict: '400',
  repeat_penalty: '1.1',
  seed: '-1',
  // llama.cpp's newer samplers, at its defaults (all off)
  top_n_sigma: '-1',
  xtc_probability: '0',
  xtc_threshold: '0.1',
  dry_multiplier: '0',
  dry_base: '1.75',
  dry_allowed_length: '2',
  dry_penalty_last_n: '-1',
  dry_sequence_breakers: '',
  grammar: '',
  json_schema: '',
};

// Numeric settings and whether they must be integers.
const NUMERIC_SETTINGS = {
  temperature: false,
  top_k: true,
  top_p: false,
  min_p: false,
  n_predict: true,
  repeat_penalty: false,
  seed: true,
  top_n_sigma: false,
  xtc_probability: false,
  xtc_threshold: false,
  dry_multiplier: false,
  dry_base: false,
  dry_allowed_length: true,
  dry_penalty_last_n: true,
};

// Text inserted by the completion template picker; {cursor} marks where the
// caret goes afterwards.
const TEMPLATES = {
  instruction: '### Instruction:\n{cursor}\n### Response:\n',
  chatml:
    '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' +
    '<|im_start|>user\n{cursor}<|im_end|>\n<|im_start|>assistant\n',
  llama2: '[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\n{cursor} [/INST]',
  llama3:
    '<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>' +
    '<|start_header_id|>user<|end_header_id|>\n\n{cursor}<|eot_id|>' +
    '<|start_header_id|>assistant<|end_header_id|>\n\n',
};

// Storage access can throw (storage disabled, private mode, quota), even just
// reading window.localStorage: never let it break the page. `area` is
// 'localStorage' or 'sessionStorage'.
function readJSON(area, key, fallback) {
  try {
    const raw = window[area].getItem(key);
    return raw === null ? fallback : JSON.parse(raw);
  } catch {
    return fallback;
  }
}
function writeJSON(area, key, value) {
  try {
    window[area].setItem(key, JSON.stringify(value));
  } catch {
    // ignore
  }
}

const stored = readJSON('localStorage', STORAGE_SETTINGS, {});
const state = {
  mode: stored.mode === 'completion' ? 'completion' : 'chat',
  settings: { ...DEFAULT_SETTINGS, ...pickStrings(stored.settings, DEFAULT_SETTINGS) },
  completionPrompt: typeof stored.completion_prompt === 'string' ? stored.completion_prompt : '',
  messages: loadConversation(),
};

/** Keeps only the known keys of `obj` whose values are strings. */
function pickStrings(obj, known) {
  const out = {};
  if (obj && typeof obj === 'object') {
    for (const key of Object.keys(known)) {
      if (typeof obj[key] === 'string') out[key] = obj[key];
    }
  }
  return out;
}

function loadConversation() {
  const list = readJSON('localStorage', STORAGE_CONVERSATION, []);
  if (!Array.isArray(list)) return [];
  return list
    .filter((m) => m && (m.role === 'user' || m.role === 'assistant') && validContent(m.content))
    .map((m) => ({ role: m.role, content: m.content }));
}

/** A stored message's content: text, or text and image parts (data: URLs only). */
function validContent(content) {
  if (typeof content === 'string') return true;
  return Array.isArray(content) && content.every((part) => part && (
    (part.type === 'text' && typeof part.text === 'string')
    || (part.type === 'image_url' && typeof part.image_url?.url === 'string'
        && part.image_url.url.startsWith('data:image/'))));
}

function saveSettings() {
  writeJSON('localStorage', STORAGE_SETTINGS, {
    mode: state.mode,
    settings: state.settings,
    completion_prompt: state.completionPrompt,
  });
}

function saveConversation() {
  if (state.messages.length === 0) {
    try {
      localStorage.removeItem(STORAGE_CONVERSATION);
    } catch {
      // ignore
    }
  } else {
    writeJSON('localStorage', STORAGE_CONVERSATION, state.messages);
  }
}

function getApiKey() {
  try {
    return sessionStorage.getItem(STORAGE_API_KEY) || '';
  } catch {
    return '';
  }
}

/** Config for completion.js calls: same-origin server, API key if we have one. */
function apiConfig(controller) {
  const config = { controller };
  const key = getApiKey();
  if (key) config.api_key = key;
  return config;
}

// ---------------------------------------------------------------------------
// Request parameters
// ---------------------------------------------------------------------------

/**
 * Builds the request parameters from the settings panel.
 * @param {'chat'|'completion'} mode
 * @throws {Error} with a user-facing message if a field is invalid
 */
function buildParams(mode) {
  const s = state.settings;
  const params = {};
  for (const [name, integer] of Object.entries(NUMERIC_SETTINGS)) {
    const raw = String(s[name] ?? '').trim();
    if (raw === '') continue;
    const value = Number(raw);
    if (!Number.isFinite(value) || (integer && !Number.isInteger(value))) {
      throw new Error(`Setting ${name} must be ${integer ? 'an integer' : 'a number'}.`);
    }
    params[name] = value;
  }

  if (s.dry_sequence_breakers.trim() !== '') {
    let breakers;
    try {
      breakers = JSON.parse(s.dry_sequence_breakers);
    } catch {
      breakers = undefined;
    }
    if (!Array.isArray(breakers) || breakers.length === 0 || !breakers.every((b) => typeof b === 'string')) {
      throw new Error('Setting dry_sequence_breakers must be a JSON array of strings, e.g. ["\\n", ":"].');
    }
    params.dry_sequence_breakers = breakers;
  }

  if (s.grammar.trim() !== '') params.grammar = s.grammar;

  let schema;
  if (s.json_schema.trim() !== '') {
    try {
      schema = JSON.parse(s.json_schema);
    } catch (err) {
      throw new Error(`JSON schema is not valid JSON: ${err.message}`);
    }
  }

  if (mode === 'chat') {
    // OpenAI's name for the token limit; llama.cpp also reads n_predict here.
    if (params.n_predict !== undefined && params.n_predict >= 0) params.max_tokens = params.n_predict;
    if (schema !== undefined) params.response_format = { type: 'json_object', schema };
  } else if (schema !== undefined) {
    params.json_schema = schema;
  }

  // Reuse the KV cache for the common prefix (the conversation so far).
  params.cache_prompt = true;
  return params;
}

// ---------------------------------------------------------------------------
// UI helpers
// ---------------------------------------------------------------------------

const els = {
  tabChat: $('mode-chat'),
  tabCompletion: $('mode-completion'),
  panelChat: $('panel-chat'),
  panelCompletion: $('panel-completion'),
  messages: $('messages'),
  chatInput: $('chat-input'),
  send: $('send'),
  stop: $('stop'),
  newChat: $('new-chat'),
  error: $('error'),
  tps: $('tokens-per-second'),
  prompt: $('completion-prompt'),
  output: $('completion-output'),
  template: $('completion-template'),
  append: $('completion-append'),
  settingsPanel: $('settings-panel'),
  settingsForm: $('settings-form'),
  settingsReset: $('settings-reset'),
  modelName: $('model-name'),
  keyForm: $('api-key-form'),
  keyLabel: $('api-key-label'),
  keyInput: $('api-key-input'),
  attach: $('attach'),
  imageInput: $('image-input'),
  attachments: $('attachments'),
};

// ---------------------------------------------------------------------------
// Images (a model served with --mmproj: /props says modalities.vision)
// ---------------------------------------------------------------------------

let visionEnabled = false;
/** data: URLs of the images to send with the next chat message */
let pendingImages = [];

function setVision(enabled) {
  visionEnabled = enabled;
  if (!enabled) setPendingImages([]);
  showAttach();
}

/** Images go with chat messages only: the button and the attached images show in chat mode. */
function showAttach() {
  const chatMode = state.mode === 'chat';
  els.attach.hidden = !(visionEnabled && chatMode);
  els.attachments.hidden = !chatMode || pendingImages.length === 0;
}

function setPendingImages(images) {
  pendingImages = images;
  els.attachments.replaceChildren(...images.map((url, index) => {
    const item = document.createElement('div');
    const img = document.createElement('img');
    img.src = url;
    img.alt = `attached image ${index + 1}`;
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'secondary';
    remove.textContent = 'Remove';
    remove.addEventListener('click', () => setPendingImages(pendingImages.filter((_, i) => i !== index)));
    item.append(img, remove);
    return item;
  }));
  showAttach();
}

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function attachFiles(files) {
  const images = [...files].filter((file) => file.type.startsWith('image/'));
  if (!visionEnabled || images.length === 0) return false;
  const urls = await Promise.all(images.map(readAsDataURL));
  setPendingImages([...pendingImages, ...urls]);
  return true;
}

/** The text of a message's content: a string, or the text parts of a content-part list. */
function contentText(content) {
  if (!Array.isArray(content)) return content;
  return content.filter((part) => part.type === 'text').map((part) => part.text).join('\n');
}

function showError(message) {
  els.error.textContent = message;
  els.error.hidden = !message;
}

function clearError() {
  showError('');
}

function setTokensPerSecond(rate) {
  if (rate === null || rate === undefined || !Number.isFinite(rate)) {
    els.tps.textContent = '';
    delete els.tps.dataset.value;
  } else {
    els.tps.textContent = `${rate.toFixed(2)} tokens/s`;
    els.tps.dataset.value = String(rate);
  }
}

function setBusy(busy) {
  els.send.disabled = busy;
  els.stop.disabled = !busy;
  document.body.classList.toggle('busy', busy);
}

/** True if the element is scrolled (nearly) to its bottom. */
function atBottom(el) {
  return el.scrollHeight - el.scrollTop - el.clientHeight < 48;
}

function createMessageElement(message) {
  const div = document.createElement('div');
  div.className = `message ${message.role}`;
  if (Array.isArray(message.content)) {
    // images first, then the text (plain text only)
    for (const part of message.content) {
      if (part.type !== 'image_url') continue;
      const img = document.createElement('img');
      img.src = part.image_url.url;
      img.alt = 'image';
      div.append(img);
    }
    div.append(document.createTextNode(contentText(message.content)));
  } else {
    div.textContent = message.content; // plain text only
  }
  return div;
}

function renderMessages() {
  els.messages.replaceChildren(...state.messages.map(createMessageElement));
  els.messages.scrollTop = els.messages.scrollHeight;
}

function setMode(mode) {
  state.mode = mode;
  const chatMode = mode === 'chat';
  els.tabChat.setAttribute('aria-selected', String(chatMode));
  els.tabCompletion.setAttribute('aria-selected', String(!chatMode));
  els.panelChat.hidden = !chatMode;
  els.panelCompletion.hidden = chatMode;
  els.chatInput.hidden = !chatMode;
  showAttach();
  document.body.dataset.mode = mode;
  saveSettings();
}

// ---------------------------------------------------------------------------
// Generation speed
// ---------------------------------------------------------------------------

/**
 * Measures tokens/s. The server's own figure (timings.predicted_per_second)
 * wins when present; otherwise it is estimated from chunk arrival times,
 * counting one token per content chunk.
 */
class RateMeter {
  constructor() {
    this.start = performance.now();
    this.first = null;
    this.last = null;
    this.count = 0;
    this.serverRate = null;
  }

  tick() {
    const now = performance.now();
    if (this.first === null) this.first = now;
    this.last = now;
    this.count += 1;
  }

  setTimings(timings) {
    const rate = timings && timings.predicted_per_second;
    if (typeof rate === 'number' && Number.isFinite(rate) && rate > 0) this.serverRate = rate;
  }

  rate() {
    if (this.serverRate !== null) return this.serverRate;
    if (this.count === 0) return null;
    // Measure from the first chunk so prompt processing time is excluded
    // (like predicted_per_second); with a single chunk, use the whole request.
    if (this.count > 1 && this.last > this.first) {
      return (this.count - 1) / ((this.last - this.first) / 1000);
    }
    const seconds = (this.last - this.start) / 1000;
    return seconds > 0 ? this.count / seconds : null;
  }
}

// ---------------------------------------------------------------------------
// Running a streamed request
// ---------------------------------------------------------------------------

/** The request in flight: {controller, done: Promise}, or null. */
let active = null;

/**
 * Runs `body(controller, meter)` with the Send/Stop buttons switched, and
 * reports how it ended: {ok: true}, {aborted: true} or {error}.
 */
async function runStream(body) {
  const controller = new AbortController();
  const meter = new RateMeter();
  let finish;
  active = { controller, done: new Promise((resolve) => (finish = resolve)) };
  setBusy(true);
  setTokensPerSecond(null);
  try {
    await body(controller, meter);
    return { ok: true };
  } catch (error) {
    if (controller.signal.aborted || (error && error.name === 'AbortError')) {
      return { aborted: true };
    }
    return { error };
  } finally {
    setTokensPerSecond(meter.rate());
    active = null;
    setBusy(false);
    finish();
  }
}

function stop() {
  if (active) active.controller.abort();
}

/** Shows a request error; on 401 asks for an API key and retries with `retry`. */
function reportError(error, retry) {
  if (error && error.status === 401) {
    askForApiKey(error.message, retry);
  } else {
    showError((error && error.message) || String(error));
  }
}

// ---------------------------------------------------------------------------
// API key (asked for once, on the first 401)
// ---------------------------------------------------------------------------

// Requests to redo once a key is saved (e.g. the /props load and a chat send).
const pendingRetries = new Set();

function askForApiKey(serverMessage, retry) {
  if (retry) pendingRetries.add(retry);
  if (!els.keyForm.hidden) return; // already asking
  els.keyLabel.textContent = getApiKey()
    ? `The API key was rejected${serverMessage ? ` (${serverMessage})` : ''}. Enter a valid key.`
    : 'This server requires an API key.';
  els.keyForm.hidden = false;
  els.keyInput.value = '';
  els.keyInput.focus();
}

els.keyForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const key = els.keyInput.value.trim();
  if (!key) {
    els.keyInput.focus();
    return;
  }
  try {
    sessionStorage.setItem(STORAGE_API_KEY, key);
  } catch {
    // ignore: the key then lasts only until the next 401
  }
  els.keyInput.value = '';
  els.keyForm.hidden = true;
  clearError();
  const retries = [...pendingRetries];
  pendingRetries.clear();
  for (const retry of retries) retry();
});

// ---------------------------------------------------------------------------
// Chat mode
// ---------------------------------------------------------------------------

async function sendChat() {
  const text = els.chatInput.value;
  if (text.trim() === '') {
    els.chatInput.focus();
    return;
  }
  let params;
  try {
    params = buildParams('chat');
  } catch (error) {
    showError(error.message);
    return;
  }

  const conversation = state.messages;
  const images = pendingImages;
  const userMessage = {
    role: 'user',
    content: images.length === 0 ? text : [
      ...images.map((url) => ({ type: 'image_url', image_url: { url } })),
      { type: 'text', text },
    ],
  };
  conversation.push(userMessage);
  setPendingImages([]);

  const requestMessages = conversation.map(({ role, content }) => ({ role, content }));
  const system = state.settings.system_prompt.trim();
  if (system) requestMessages.unshift({ role: 'system', content: state.settings.system_prompt });

  const assistantMessage = { role: 'assistant', content: '' };
  conversation.push(assistantMessage);

  const userEl = createMessageElement(userMessage);
  const assistantEl = createMessageElement(assistantMessage);
  assistantEl.classList.add('streaming');
  els.messages.append(userEl, assistantEl);
  els.messages.scrollTop = els.messages.scrollHeight;
  els.chatInput.value = '';

  const result = await runStream(async (controller, meter) => {
    for await (const chunk of chat(requestMessages, params, apiConfig(controller))) {
      const delta = chunk.choices?.[0]?.delta?.content;
      if (typeof delta === 'string' && delta !== '') {
        const follow = atBottom(els.messages);
        assistantMessage.content += delta;
        assistantEl.textContent = assistantMessage.content;
        meter.tick();
        if (follow) els.messages.scrollTop = els.messages.scrollHeight;
      }
      // llama.cpp may attach its timings to the final chunk.
      if (chunk.timings) meter.setTimings(chunk.timings);
    }
  });
  assistantEl.classList.remove('streaming');

  if (!result.ok && assistantMessage.content === '') {
    // Nothing came back (stopped early, or failed): undo the exchange and give
    // the text back, so the conversation never holds two user turns in a row.
    const index = conversation.indexOf(userMessage);
    if (index !== -1) conversation.splice(index, 2);
    userEl.remove();
    assistantEl.remove();
    if (els.chatInput.value === '') els.chatInput.value = text;
    if (pendingImages.length === 0) setPendingImages(images);
  }
  if (conversation === state.messages) saveConversation();
  if (result.error) reportError(result.error, send);
}

// ---------------------------------------------------------------------------
// Completion mode
// ---------------------------------------------------------------------------

async function sendCompletion() {
  const prompt = els.prompt.value;
  if (prompt === '') {
    showError('Enter a prompt first.');
    els.prompt.focus();
    return;
  }
  let params;
  try {
    params = buildParams('completion');
  } catch (error) {
    showError(error.message);
    return;
  }

  const output = els.output;
  output.textContent = '';
  output.classList.add('streaming');

  const result = await runStream(async (controller, meter) => {
    for await (const chunk of llama(prompt, params, apiConfig(controller))) {
      const data = chunk.data;
      if (typeof data.content === 'string' && data.content !== '') {
        const follow = atBottom(output);
        output.append(data.content); // a Text node: never parsed as HTML
        meter.tick();
        if (follow) output.scrollTop = output.scrollHeight;
      }
      if (data.stop) meter.setTimings(data.timings);
    }
  });
  output.classList.remove('streaming');
  output.normalize(); // merge the Text nodes appended per chunk
  if (result.error) reportError(result.error, send);
}

// ---------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------

function send() {
  if (active) return;
  clearError();
  if (state.mode === 'chat') sendChat();
  else sendCompletion();
}

async function newChat() {
  if (active) {
    const { done } = active;
    stop();
    await done;
  }
  state.messages = [];
  saveConversation();
  renderMessages();
  els.output.textContent = '';
  setTokensPerSecond(null);
  clearError();
  if (state.mode === 'chat') els.chatInput.focus();
}

function insertTemplate(name) {
  const template = TEMPLATES[name];
  if (!template) return;
  const [before, after = ''] = template.split('{cursor}');
  const textarea = els.prompt;
  const start = textarea.selectionStart ?? textarea.value.length;
  const end = textarea.selectionEnd ?? start;
  textarea.setRangeText(before + after, start, end, 'end');
  const caret = start + before.length;
  textarea.setSelectionRange(caret, caret);
  textarea.focus();
  state.completionPrompt = textarea.value;
  saveSettings();
}

async function loadModelInfo() {
  try {
    const props = await llamaModelInfo(apiConfig());
    const settings = props.default_generation_settings || {};
    const model = typeof settings.model === 'string' ? settings.model.split(/[\\/]/).pop() : '';
    const parts = [];
    if (model) parts.push(model);
    if (settings.n_ctx) parts.push(`ctx ${settings.n_ctx}`);
    els.modelName.textContent = parts.join(' · ');
    setVision(props.modalities?.vision === true);
  } catch (error) {
    if (error && error.status === 401) {
      askForApiKey(error.message, loadModelInfo);
    } else {
      // Informational only: the page still works without /props.
      console.warn('llamacy: could not read /props:', error);
    }
  }
}

// ---------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------

function fillSettingsForm() {
  for (const el of els.settingsForm.querySelectorAll('[data-setting]')) {
    el.value = state.settings[el.dataset.setting] ?? '';
  }
}

els.settingsForm.addEventListener('submit', (event) => event.preventDefault());
els.settingsForm.addEventListener('input', (event) => {
  const name = event.target.dataset && event.target.dataset.setting;
  if (!name) return;
  state.settings[name] = event.target.value;
  saveSettings();
});
els.settingsReset.addEventListener('click', () => {
  state.settings = { ...DEFAULT_SETTINGS };
  fillSettingsForm();
  saveSettings();
});

els.tabChat.addEventListener('click', () => setMode('chat'));
els.tabCompletion.addEventListener('click', () => setMode('completion'));
els.send.addEventListener('click', send);
els.stop.addEventListener('click', stop);
els.newChat.addEventListener('click', newChat);

els.attach.addEventListener('click', () => els.imageInput.click());
els.imageInput.addEventListener('change', async () => {
  await attachFiles(els.imageInput.files);
  els.imageInput.value = '';
});
els.chatInput.addEventListener('paste', async (event) => {
  const files = event.clipboardData ? event.clipboardData.files : [];
  if (visionEnabled && files.length > 0 && [...files].some((f) => f.type.startsWith('image/'))) {
    event.preventDefault();
    await attachFiles(files);
  }
});
els.chatInput.addEventListener('keydown', (event) => {
  // Enter sends; Shift+Enter inserts a newline; don't interfere with IME composition.
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
els.prompt.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    send();
  }
});
els.prompt.addEventListener('input', () => {
  state.completionPrompt = els.prompt.value;
  saveSettings();
});
els.template.addEventListener('change', () => {
  insertTemplate(els.template.value);
  els.template.value = '';
});
els.append.addEventListener('click', () => {
  els.prompt.value += els.output.textContent;
  els.output.textContent = '';
  state.completionPrompt = els.prompt.value;
  saveSettings();
  els.prompt.focus();
});

// Initial render.
fillSettingsForm();
els.prompt.value = state.completionPrompt;
renderMessages();
setMode(state.mode);
setBusy(false);
// On a phone, start with the settings folded away.
if (window.matchMedia('(max-width: 760px)').matches) els.settingsPanel.open = false;
loadModelInfo();
