// Interactive console chat against a llamacy (or llama.cpp) server's /completion endpoint,
// streaming each answer as it is generated. Node.js 16 or later, no dependencies.
//
//   node tools/chat.mjs                              # server at http://127.0.0.1:8080
//   API_URL=http://host:8080 API_KEY=secret node tools/chat.mjs
//
// Type a question and press Enter; Ctrl-D (end of input) quits. Questions can also be piped in,
// one per line. Settings come from the environment: API_URL, API_KEY, N_PREDICT (default 256),
// TEMPERATURE (default 0.2).
import http from 'node:http'
import https from 'node:https'
import readline from 'node:readline'

const API_URL = (process.env.API_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '')
const API_KEY = process.env.API_KEY || ''
const N_PREDICT = Number(process.env.N_PREDICT || 256)
const TEMPERATURE = Number(process.env.TEMPERATURE || 0.2)

const INSTRUCTION = 'A chat between a curious human and an artificial intelligence assistant. ' +
  "The assistant gives helpful, detailed, and polite answers to the human's questions."
const STOP = '\n### Human:'
// the conversation so far: [question, answer] pairs, starting with a greeting
const history = [['Hello, Assistant.', 'Hello. How may I help you today?']]

function formatPrompt (question) {
  const turns = history.map(([q, a]) => `### Human: ${q}\n### Assistant: ${a}`)
  return `${INSTRUCTION}\n${turns.join('\n')}\n### Human: ${question}\n### Assistant:`
}

// POST a JSON body; resolves with the response, whose body is read by the caller.
function post (path, body) {
  const url = new URL(API_URL + path)
  const client = url.protocol === 'https:' ? https : http
  const headers = { 'Content-Type': 'application/json' }
  if (API_KEY) headers.Authorization = `Bearer ${API_KEY}`
  return new Promise((resolve, reject) => {
    const req = client.request(url, { method: 'POST', headers }, resolve)
    req.on('error', reject)
    req.end(JSON.stringify(body))
  })
}

async function readAll (res) {
  let text = ''
  res.setEncoding('utf8')
  for await (const chunk of res) text += chunk
  return text
}

async function postJson (path, body) {
  const res = await post(path, body)
  const text = await readAll(res)
  if (res.statusCode !== 200) throw new Error(`${path}: HTTP ${res.statusCode}: ${text}`)
  return JSON.parse(text)
}

// Yields each server-sent event's JSON payload.
async function * events (res) {
  let buffer = ''
  res.setEncoding('utf8')
  for await (const chunk of res) {
    buffer += chunk
    let end
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      for (const line of event.split('\n')) {
        if (line.startsWith('data: ')) yield JSON.parse(line.slice(6))
      }
    }
  }
}

let nKeep = 0

async function ask (question) {
  const res = await post('/completion', {
    prompt: formatPrompt(question),
    temperature: TEMPERATURE,
    top_k: 40,
    top_p: 0.9,
    n_keep: nKeep,
    n_predict: N_PREDICT,
    cache_prompt: true,
    stop: [STOP],
    stream: true
  })
  if (res.statusCode !== 200) throw new Error(`/completion: HTTP ${res.statusCode}: ${await readAll(res)}`)
  let answer = ''
  for await (const data of events(res)) {
    if (data.error) throw new Error(`/completion: ${data.error.message}`)
    process.stdout.write(data.content)
    answer += data.content
    if (data.stop) break
  }
  process.stdout.write('\n')
  history.push([question, answer.trim()])
}

async function main () {
  // keep the instruction when the conversation outgrows the context
  nKeep = (await postJson('/tokenize', { content: INSTRUCTION })).tokens.length
  const interactive = process.stdin.isTTY
  const rl = readline.createInterface({ input: process.stdin, output: interactive ? process.stdout : undefined })
  if (interactive) rl.setPrompt('> ')
  if (interactive) rl.prompt()
  for await (const line of rl) {
    const question = line.trim()
    if (question) await ask(question)
    if (interactive) rl.prompt()
  }
}

main().catch((err) => {
  process.stderr.write(`chat.mjs: ${err.message}\n`)
  process.exit(1)
})
