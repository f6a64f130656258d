// The automerge-repo side of the side-by-side (run by run.sh; figures in BENCHMARKS.md).
//
// The same caseload that Tether's side recorded (caseload.json: each episode's opening
// and records, exactly as Tether stored them) goes into one automerge-repo document per
// episode, one change for the opening and one per record, as Tether's documents do. A
// client Repo with a NodeFS storage adapter (as a phone keeps its documents on disk)
// then connects through a byte-counting TCP proxy to the reference sync server
// (@automerge/automerge-repo-sync-server) and syncs them; then it starts again from its
// storage and syncs with nothing new.
//
// Wire bytes: every byte through the proxy, both ways (the HTTP upgrade and the
// WebSocket frames). Messages: repo messages sent and received by the client's network
// adapter. Time: from connecting until the last message, once nothing has moved for
// IDLE_MS (the idle wait itself is not counted).
//
// Usage: node peer.mjs CASELOAD.json SERVER_PORT TETHER.json [maps|strings]
//   maps (default): records as Automerge maps, string values as immutable strings;
//   strings: records as one immutable JSON string each, exactly Tether's layout.

import fs from "node:fs"
import net from "node:net"
import os from "node:os"
import path from "node:path"
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"
import { ImmutableString } from "@automerge/automerge"

const [caseloadPath, serverPort, tetherPath, layout = "maps"] = process.argv.slice(2)
if (!caseloadPath || !serverPort || !tetherPath) {
  console.error("usage: node peer.mjs CASELOAD.json SERVER_PORT TETHER.json [maps|strings]")
  process.exit(2)
}
const IDLE_MS = 1000
const caseload = JSON.parse(fs.readFileSync(caseloadPath, "utf8"))
const tether = JSON.parse(fs.readFileSync(tetherPath, "utf8"))

// A string as Tether stores it: a scalar register, not collaborative text.
const scalar = (v) => (typeof v === "string" ? new ImmutableString(v) : v)
function record(event) {
  if (layout === "strings") return new ImmutableString(JSON.stringify(event))
  const out = {}
  for (const [k, v] of Object.entries(event)) out[k] = scalar(v)
  return out
}

// A TCP proxy that counts bytes both ways.
function countingProxy(targetPort) {
  const counts = { up: 0, down: 0, connections: 0 }
  const server = net.createServer((client) => {
    counts.connections++
    const upstream = net.connect(targetPort, "127.0.0.1")
    client.setNoDelay(true)
    upstream.setNoDelay(true)
    client.on("data", (d) => {
      counts.up += d.length
      upstream.write(d)
    })
    upstream.on("data", (d) => {
      counts.down += d.length
      client.write(d)
    })
    client.on("close", () => upstream.destroy())
    upstream.on("close", () => client.destroy())
    client.on("error", () => upstream.destroy())
    upstream.on("error", () => client.destroy())
  })
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve({ counts, port: server.address().port, server })),
  )
}

// A client adapter whose messages are counted, with the time of the last one.
function countedAdapter(url, tally) {
  const adapter = new WebSocketClientAdapter(url)
  const send = adapter.send.bind(adapter)
  adapter.send = (message) => {
    tally.sent++
    tally.last = performance.now()
    send(message)
  }
  adapter.on("message", () => {
    tally.received++
    tally.last = performance.now()
  })
  return adapter
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

async function untilIdle(tally) {
  while (tally.sent + tally.received === 0 || performance.now() - tally.last < IDLE_MS) await sleep(50)
}

// One session: a Repo on `dir`'s storage loads the documents, then connects and syncs.
async function session(dir, urls, proxy) {
  const repo = new Repo({ storage: new NodeFSStorageAdapter(dir), network: [] })
  const handles = []
  for (const url of urls) handles.push(await repo.find(url))
  proxy.counts.up = proxy.counts.down = proxy.counts.connections = 0
  const tally = { sent: 0, received: 0, last: 0 }
  const start = performance.now()
  repo.networkSubsystem.addNetworkAdapter(countedAdapter(`ws://127.0.0.1:${proxy.port}`, tally))
  await untilIdle(tally)
  const figures = {
    wire_bytes: proxy.counts.up + proxy.counts.down,
    up: proxy.counts.up,
    down: proxy.counts.down,
    messages: tally.sent + tally.received,
    sent: tally.sent,
    received: tally.received,
    connections: proxy.counts.connections,
    ms: tally.last - start,
  }
  await repo.shutdown()
  return figures
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "peer-client-"))
  // Recorded offline: no network at all.
  const offline = new Repo({ storage: new NodeFSStorageAdapter(dir), network: [] })
  const urls = []
  let records = 0
  for (const episode of caseload) {
    const handle = offline.create({
      schema: 1,
      id: scalar(episode.id),
      patient_ref: scalar(episode.patient_ref),
      team: scalar(episode.team),
      opened_at: scalar(episode.opened_at),
      opened_by: scalar(episode.opened_by),
      facts: { pathway: scalar(episode.pathway) },
      plan: "",
      events: {},
    })
    for (const event of episode.events) {
      handle.change((d) => {
        d.events[event.id] = record(event)
      })
      records++
    }
    urls.push(handle.url)
  }
  await offline.flush()
  await offline.shutdown()

  const proxy = await countingProxy(Number(serverPort))
  const first = await session(dir, urls, proxy)
  const resync = await session(dir, urls, proxy)

  // Check, directly against the server: it holds every document with every record.
  const checker = new Repo({ network: [new WebSocketClientAdapter(`ws://127.0.0.1:${serverPort}`)] })
  let held = 0
  for (const url of urls) {
    const doc = (await checker.find(url)).doc()
    held += Object.keys(doc.events).length
  }
  await checker.shutdown()
  proxy.server.close()
  fs.rmSync(dir, { recursive: true, force: true })
  if (held !== records) {
    console.error(`the server holds ${held} records of ${records}`)
    process.exit(1)
  }

  const n = caseload.length
  const per = records / n
  console.log(
    `\n${n} episodes x ${per} records (${records} records), automerge-repo layout: ${layout}; ` +
      `the server holds all ${held} records (checked)\n`,
  )
  console.log("| | Tether: bytes | round trips | ms | automerge-repo: bytes | messages | ms | bytes ratio (am-repo / Tether) |")
  console.log("|---|---:|---:|---:|---:|---:|---:|---:|")
  for (const [what, t, a] of [
    ["first sync", tether.first, first],
    ["up-to-date resync", tether.resync, resync],
  ]) {
    console.log(
      `| ${what} | ${t.wire_bytes} | ${t.round_trips} | ${t.ms.toFixed(0)} | ${a.wire_bytes} | ` +
        `${a.messages} (${a.sent} sent, ${a.received} received) | ${a.ms.toFixed(0)} | ${(a.wire_bytes / t.wire_bytes).toFixed(1)} |`,
    )
  }
  console.log(JSON.stringify({ layout, first, resync }))
  process.exit(0)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
