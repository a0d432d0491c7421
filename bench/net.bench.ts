// Loopback TCP connect+close and unconnected UDP sendto in a loop, side by side in one run: no sensor;
// the parts of the untagged cost alone (the process sensor's system call tracepoints; cgroup programs that
// decide nothing); sensor loaded, process untagged; tagged under a 10-rule network policy; tagged under a
// 100,000-rule one.
// The loops are a small C program (compiled at start) that times itself, so the numbers are the cost per
// call and not of starting processes: wall time (what the targets are about) and the loop's own CPU time
// (steadier when other work shares the machine). The peer is a separate process, the same for every
// configuration. Rounds are interleaved and medians compared, so drift hits all configurations alike.
// Traffic goes to 127.0.0.1 only.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { sessionName } from '../src/agent/ids.js';
import { Supervisor } from '../src/agent/supervisor.js';
import { BpfObject } from '../src/kernel/binding.js';
import { cgroup2Root } from '../src/kernel/net.js';
import { Sensor } from '../src/kernel/sensor.js';
import { normalizeCidr, parsePolicy } from '../src/policy/load.js';
import { measureBpf, withBpfStats, type RunTime } from './bpfstats.js';
import type { NetRule, Policy, PortRange } from '../src/policy/types.js';

const CONNECTS = Number(process.env.BENCH_CONNECTS ?? 20_000);
const SENDS = Number(process.env.BENCH_SENDS ?? 200_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);

// `serve`: a TCP listener and a UDP socket on 127.0.0.1 (ephemeral ports, printed), accepting and closing
// forever; the UDP socket is never read (once its buffer is full every datagram is dropped the same way).
// `tcp N PORT`: N connect+close (SO_LINGER 0 closes with a reset, so no TIME_WAIT piles up over the runs).
// `udp N PORT`: N sendto on one unconnected socket (so every datagram passes the sendmsg hook).
// Both warm up with N/20 calls first, then print: wall ns, CPU ns (of the timed loop), calls made in all.
const NETLOOP_C = String.raw`
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) { perror(what); exit(1); }

/* wall time and this thread's CPU time (user + system, including what the hooks cost it) */
struct times {
	long long wall, cpu;
};

static long long ns(clockid_t clock)
{
	struct timespec t;
	clock_gettime(clock, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static struct times now(void)
{
	struct times t = { ns(CLOCK_MONOTONIC), ns(CLOCK_THREAD_CPUTIME_ID) };
	return t;
}

static struct times since(struct times t0)
{
	struct times t = now();
	t.wall -= t0.wall;
	t.cpu -= t0.cpu;
	return t;
}

static struct sockaddr_in loopback(int port)
{
	struct sockaddr_in a;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons(port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

static int bound(int type, int *port)
{
	int s = socket(AF_INET, type, 0);
	if (s < 0)
		die("socket");
	struct sockaddr_in a = loopback(0);
	socklen_t len = sizeof(a);
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || getsockname(s, (struct sockaddr *)&a, &len) < 0)
		die("bind");
	*port = ntohs(a.sin_port);
	return s;
}

static void serve(void)
{
	int tport, uport;
	int t = bound(SOCK_STREAM, &tport);
	bound(SOCK_DGRAM, &uport);
	if (listen(t, 4096) < 0)
		die("listen");
	printf("%d %d\n", tport, uport);
	fflush(stdout);
	for (;;) {
		int c = accept(t, NULL, NULL);
		if (c >= 0)
			close(c);
		else if (errno != EINTR && errno != ECONNABORTED)
			die("accept");
	}
}

static struct times tcp_loop(int n, int port)
{
	struct sockaddr_in a = loopback(port);
	struct linger l = { 1, 0 };
	struct times t0 = now();
	for (int i = 0; i < n; i++) {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		if (s < 0)
			die("socket");
		if (setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof(l)) < 0)
			die("SO_LINGER");
		if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0)
			die("connect");
		close(s);
	}
	return since(t0);
}

static struct times udp_loop(int n, int port)
{
	struct sockaddr_in a = loopback(port);
	char buf[32] = { 0 };
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	if (s < 0)
		die("socket");
	struct times t0 = now();
	for (int i = 0; i < n; i++)
		if (sendto(s, buf, sizeof(buf), 0, (struct sockaddr *)&a, sizeof(a)) != (ssize_t)sizeof(buf))
			die("sendto");
	struct times t = since(t0);
	close(s);
	return t;
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "serve")) {
		serve();
		return 0;
	}
	int tcp = argc == 4 && !strcmp(argv[1], "tcp");
	if (!tcp && !(argc == 4 && !strcmp(argv[1], "udp"))) {
		fprintf(stderr, "usage: netloop serve | netloop tcp|udp N PORT\n");
		return 2;
	}
	int n = atoi(argv[2]), port = atoi(argv[3]);
	int warm = n / 20 + 1; /* caches, the socket slab, the hooks */
	struct times t;
	if (tcp) {
		tcp_loop(warm, port);
		t = tcp_loop(n, port);
	} else {
		udp_loop(warm, port);
		t = udp_loop(n, port);
	}
	printf("%lld %lld %d\n", t.wall, t.cpu, warm + n);
	return 0;
}
`;

const BASE_YAML = `version: 1
name: bench
network:
  default: deny
  allow:
    - cidr: 127.0.0.1/32
    - cidr: ::1/128
    - cidr: 10.1.2.0/24
      ports: [443, "8000-8100"]
      proto: tcp
    - cidr: 192.168.0.0/16
      ports: [53]
      proto: udp
    - cidr: 172.16.0.0/12
      ports: ["1024-65535"]
  deny:
    - cidr: 169.254.169.254/32
    - cidr: 10.1.2.3/32
    - cidr: fd00:ec2::254/128
    - cidr: 192.168.1.0/24
      ports: [22]
    - cidr: 0.0.0.0/8
`;

/**
 * The 10 rules above plus generated ones up to `rules`: IPv4 /32 denies, IPv4 /24 allows with ports,
 * IPv6 /48 denies, all disjoint from each other and from 127.0.0.0/8 (no nesting, so no depth limit).
 */
function policyWith(rules: number): Policy {
  const p = parsePolicy(BASE_YAML, 'bench.yaml');
  const src = { file: 'bench.yaml', line: 0, col: 0 };
  const ports: PortRange[] = [{ from: 443, to: 443 }, { from: 8000, to: 8100 }];
  const add = (action: 'allow' | 'deny', cidr: string, extra: Partial<NetRule> = {}) => {
    const list = action === 'allow' ? p.network.allow : p.network.deny;
    const norm = normalizeCidr(cidr);
    if (!norm) throw new Error(`bad generated cidr ${cidr}`);
    list.push({ kind: 'cidr', cidr: norm, ports: [], proto: 'any', id: `network.${action}[${list.length}]`, action, src, ...extra } as NetRule);
  };
  for (let j = 0; p.network.allow.length + p.network.deny.length < rules; j++) {
    const h = j >> 1;
    const k = j >> 2;
    switch (j & 3) {
      case 0:
      case 1: // 10.64.0.0 upwards, one host each
        add('deny', `10.${64 + (h >> 16)}.${(h >> 8) & 255}.${h & 255}/32`);
        break;
      case 2: // 100.64.0.0/24 upwards, web ports only
        add('allow', `100.${64 + (k >> 8)}.${k & 255}.0/24`, { ports, proto: 'tcp' });
        break;
      default: // fd00:1:<k>::/48
        add('deny', `fd00:1:${k.toString(16)}::/48`);
    }
  }
  return { ...p, name: `bench-${rules}` };
}

type Loop = 'tcp' | 'udp';
const COUNT: Record<Loop, number> = { tcp: CONNECTS, udp: SENDS };

/** ms; `calls` counts the warm-up too */
interface Sample {
  wall: number;
  cpu: number;
  calls: number;
}

function parseTimes(out: string): Sample {
  const m = /^(\d+) (\d+) (\d+)\s*$/.exec(out);
  if (!m) throw new Error(`netloop printed ${JSON.stringify(out)}`);
  return { wall: Number(m[1]) / 1e6, cpu: Number(m[2]) / 1e6, calls: Number(m[3]) };
}

function runUntagged(bin: string, loop: Loop, port: number): Sample {
  const r = spawnSync(bin, [loop, String(COUNT[loop]), String(port)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`netloop ${loop} failed (${r.status}): ${r.stderr}`);
  return parseTimes(r.stdout);
}

/**
 * What the supervisor spent on one tagged TCP run: its CPU (all threads, from starting the session until it
 * had every event) per connect event, and how long after the client exited it caught up.
 */
interface Drain {
  events: number;
  cpuPerEvent: number;
  lagMs: number;
}

async function runTagged(sup: Supervisor, policyId: number, bin: string, loop: Loop, port: number, seen: Map<string, number>): Promise<{ s: Sample; drain?: Drain }> {
  const cpu0 = process.cpuUsage();
  const { held, session } = sup.run([bin, loop, String(COUNT[loop]), String(port)], { policyId, stdio: 'pipe', env: { PATH: '/usr/bin:/bin' } });
  const name = sessionName(session);
  seen.set(name, 0);
  let out = '';
  let err = '';
  held.child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  held.child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const closed = new Promise((r) => held.child.once('close', r)); // 'exit' can come before the last output
  const { status } = await held.exited;
  await closed;
  if (status !== 0) throw new Error(`tagged netloop ${loop} failed (${status}): ${err}`);
  const s = parseTimes(out);
  // wait until the supervisor has every connect event (allowed datagrams are reported once a second),
  // so the next run does not share the machine with this one's backlog
  const want = loop === 'tcp' ? s.calls : 1;
  const t0 = Date.now();
  while (seen.get(name)! < want && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 5));
  const got = seen.get(name)!;
  seen.delete(name);
  if (got < want) throw new Error(`supervisor saw ${got} of ${want} ${loop} events of its session`);
  if (loop === 'udp') return { s };
  const c = process.cpuUsage(cpu0);
  return { s, drain: { events: got, cpuPerEvent: (c.user + c.system) / got, lagMs: Date.now() - t0 } };
}

async function startServer(bin: string): Promise<{ child: ChildProcess; ports: Record<Loop, number> }> {
  const child = spawn(bin, ['serve'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((res, rej) => {
    const rl = createInterface({ input: child.stdout! });
    rl.once('line', (l) => {
      rl.close();
      res(l);
    });
    child.once('exit', (code) => rej(new Error(`server exited (${code})`)));
  });
  const [tcp, udp] = line.split(' ').map(Number);
  if (!tcp || !udp) throw new Error(`server printed ${JSON.stringify(line)}`);
  return { child, ports: { tcp, udp } };
}

/** bridle programs loaded by anyone else (another supervisor, a test): they would run in the "no sensor" runs too. */
function foreignSensors(): number | undefined {
  const r = spawnSync('bpftool', ['prog', 'show', '-j'], { encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  try {
    return (JSON.parse(r.stdout) as { name?: string }[]).filter((p) => p.name?.startsWith('bridle_')).length;
  } catch {
    return undefined;
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
/** the largest deviation from the median, in % */
const spread = (xs: number[]) => {
  const m = median(xs);
  return `±${((100 * Math.max(...xs.map((x) => Math.abs(x - m)))) / m).toFixed(0)}%`;
};

const CONFIGS = [
  ['none', 'no sensor', ''],
  // What "untagged" is made of, each part alone: the process sensor's system call tracepoints (every
  // system call takes the traced path), and cgroup programs that decide nothing (the hook itself).
  ['tracepoints', 'process sensor only', '(part: syscall tracepoints)'],
  ['emptyHook', 'empty cgroup programs', '(part: the cgroup hook)'],
  // Not part of bridle: the per-packet egress hook alone, the other place a datagram could be decided.
  ['emptyEgress', 'empty cgroup_skb egress', '(alternative hook)'],
  ['untagged', 'sensor loaded, untagged', '(target ≤ 1.01)'],
  ['tagged10', 'tagged, 10 rules', '(target ≤ 1.03)'],
  ['tagged100k', 'tagged, 100,000 rules', '(target ≤ 1.03)'],
] as const;
type Config = (typeof CONFIGS)[number][0];

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'bridle-netbench-'));
  let server: ChildProcess | undefined;
  const cleanup = () => {
    if (server?.pid !== undefined && server.exitCode === null && server.signalCode === null) process.kill(server.pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  const onSignal = () => {
    cleanup(); // the supervisor's links and maps go with this process
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    writeFileSync(join(dir, 'netloop.c'), NETLOOP_C);
    const bin = join(dir, 'netloop');
    const cc = spawnSync('cc', ['-O2', '-Wall', '-o', bin, join(dir, 'netloop.c')], { encoding: 'utf8' });
    if (cc.status !== 0) throw new Error(`cc failed: ${cc.stderr}`);
    // the do-nothing cgroup programs, built like bpf/ (clang, CO-RE headers)
    const hookObj = join(dir, 'hook.bpf.o');
    const bpfInc = join(import.meta.dirname, '..', 'bpf', 'include');
    const clang = spawnSync('clang', ['-g', '-O2', '-target', 'bpf', '-I', bpfInc, '-I', '/usr/include/x86_64-linux-gnu', '-c', join(import.meta.dirname, 'fixtures', 'hook.bpf.c'), '-o', hookObj], { encoding: 'utf8' });
    if (clang.status !== 0) throw new Error(`clang failed: ${clang.stderr}`);
    const cgroup = cgroup2Root();
    if (!cgroup) throw new Error('no cgroup v2 mount');
    const srv = await startServer(bin);
    server = srv.child;
    const ports = srv.ports;

    const res = {} as Record<Config, Record<Loop, Sample[]>>;
    for (const [k] of CONFIGS) res[k] = { tcp: [], udp: [] };
    const drains: Record<'tagged10' | 'tagged100k', Drain[]> = { tagged10: [], tagged100k: [] };
    let foreign = 0;
    let unknownForeign = false;
    const p10 = policyWith(10);
    const p100k = policyWith(100_000);
    const both = async (key: Config, run: (loop: Loop) => Sample | Promise<Sample>) => {
      for (const loop of ['tcp', 'udp'] as const) res[key][loop].push(await run(loop));
    };
    for (let r = 0; r < ROUNDS; r++) {
      // the last round's tracing programs are freed after a grace period: let them go first
      for (let i = 0; i < 40 && (foreignSensors() ?? 0) > 0; i++) await new Promise((res) => setTimeout(res, 50));
      const f = foreignSensors();
      if (f === undefined) unknownForeign = true;
      else if (f > 0) foreign++;
      await both('none', (loop) => runUntagged(bin, loop, ports[loop]));
      const sensor = Sensor.open({ onRecord: () => {} });
      try {
        await both('tracepoints', (loop) => runUntagged(bin, loop, ports[loop]));
      } finally {
        await sensor.close();
      }
      const hook = BpfObject.open(hookObj);
      try {
        hook.load();
        for (const name of ['bench_connect4', 'bench_sendmsg4']) hook.program(name).attachCgroup(cgroup);
        await both('emptyHook', (loop) => runUntagged(bin, loop, ports[loop]));
      } finally {
        hook.close();
      }
      const egress = BpfObject.open(hookObj);
      try {
        egress.load();
        egress.program('bench_egress').attachCgroup(cgroup);
        await both('emptyEgress', (loop) => runUntagged(bin, loop, ports[loop]));
      } finally {
        egress.close();
      }
      const sup = Supervisor.open();
      try {
        if (!sup.net) throw new Error(`network sensor not open: ${sup.warnings.join('; ')}`);
        await sup.net.ready;
        const seen = new Map<string, number>(); // session name → connect events so far
        sup.engine.addSink({
          emit: (ev) => {
            if (ev.type !== 'connect') return;
            const n = seen.get(ev.session);
            if (n !== undefined) seen.set(ev.session, n + 1);
          },
        });
        const tagged = (key: 'tagged10' | 'tagged100k', policyId: number) =>
          both(key, async (loop) => {
            const { s, drain } = await runTagged(sup, policyId, bin, loop, ports[loop], seen);
            if (drain) drains[key].push(drain);
            return s;
          });
        // One policy at a time (the tries are shared by all policies, keys carry a generation), replaced in
        // place; which one goes first alternates between rounds, so neither always follows the other.
        const order = r % 2 ? (['tagged100k', 'tagged10'] as const) : (['tagged10', 'tagged100k'] as const);
        for (const [i, key] of order.entries()) {
          const t = Date.now();
          sup.setPolicy(key === 'tagged10' ? p10 : p100k, 1);
          if (r === 0 && key === 'tagged100k') console.log(`compiled and loaded 100,000 network rules in ${Date.now() - t} ms`);
          if (i === 0) await both('untagged', (loop) => runUntagged(bin, loop, ports[loop]));
          await tagged(key, 1);
        }
      } finally {
        await sup.close();
      }
    }

    // With the kernel counting BPF run time (not during the timed rounds: counting costs a little), the
    // time the programs themselves take per call: the part of each ratio that is bridle's code, apart from
    // the hook's own cost (the empty programs' row is what any program pays to be called at all).
    const bpf = {} as Record<'emptyHook' | 'untagged' | 'tagged10' | 'tagged100k', Record<Loop, RunTime>>;
    await withBpfStats(async () => {
      const hook = BpfObject.open(hookObj);
      try {
        hook.load();
        for (const name of ['bench_connect4', 'bench_sendmsg4']) hook.program(name).attachCgroup(cgroup);
        bpf.emptyHook = { tcp: await measureBpf(() => runUntagged(bin, 'tcp', ports.tcp)), udp: await measureBpf(() => runUntagged(bin, 'udp', ports.udp)) };
      } finally {
        hook.close();
      }
      const sup = Supervisor.open();
      try {
        if (!sup.net) throw new Error(`network sensor not open: ${sup.warnings.join('; ')}`);
        await sup.net.ready;
        const seen = new Map<string, number>();
        sup.engine.addSink({
          emit: (ev) => {
            const n = ev.type === 'connect' ? seen.get(ev.session) : undefined;
            if (n !== undefined) seen.set(ev.session, n + 1);
          },
        });
        sup.setPolicy(p10, 1);
        bpf.untagged = { tcp: await measureBpf(() => runUntagged(bin, 'tcp', ports.tcp)), udp: await measureBpf(() => runUntagged(bin, 'udp', ports.udp)) };
        for (const [key, p] of [['tagged10', p10], ['tagged100k', p100k]] as const) {
          sup.setPolicy(p, 1);
          bpf[key] = {
            tcp: await measureBpf(() => runTagged(sup, 1, bin, 'tcp', ports.tcp, seen)),
            udp: await measureBpf(() => runTagged(sup, 1, bin, 'udp', ports.udp, seen)),
          };
        }
      } finally {
        await sup.close();
      }
    });

    console.log(`net bench: ${CONNECTS} TCP connect+close / ${SENDS} UDP sendto to 127.0.0.1 per run, ${ROUNDS} interleaved rounds, medians`);
    console.log(`  (spread: largest deviation from the median; client CPU: the loop's own CPU time, user + system)`);
    for (const [loop, title] of [['tcp', 'TCP connect+close'], ['udp', 'UDP sendto (unconnected)']] as const) {
      const med = (key: Config, f: 'wall' | 'cpu') => median(res[key][loop].map((s) => s[f]));
      const per = (ms: number) => `${((1000 * ms) / COUNT[loop]).toFixed(2).padStart(6)} µs`;
      console.log(`  ${title.padEnd(26)}   wall ms  spread   per call  ratio    client CPU per call  ratio`);
      for (const [key, name, target] of CONFIGS) {
        const w = med(key, 'wall');
        const c = med(key, 'cpu');
        const ws = spread(res[key][loop].map((s) => s.wall));
        console.log(
          `    ${name.padEnd(24)} ${w.toFixed(1).padStart(8)} ${ws.padStart(7)}  ${per(w)}  ${(w / med('none', 'wall')).toFixed(3)}    ${per(c).padStart(19)}  ${(c / med('none', 'cpu')).toFixed(3)}  ${target}`,
        );
      }
      // paired within each round (the two runs are next to each other), then the median over rounds
      const vs = (f: 'wall' | 'cpu') => median(res.tagged100k[loop].map((s, i) => s[f] / res.tagged10[loop][i]![f])).toFixed(3);
      console.log(`    ${'100,000 vs 10 rules'.padEnd(24)} ${' '.repeat(32)}${vs('wall')}    ${' '.repeat(19)}  ${vs('cpu')}  (target ≤ 1.00 ± noise; per round)`);
    }
    for (const [loop, title] of [['tcp', 'TCP connect+close'], ['udp', 'UDP sendto']] as const) {
      const base = (1e6 * median(res.none[loop].map((s) => s.wall))) / COUNT[loop]; // ns per call, no sensor
      console.log(`  BPF run time per ${title} (no sensor: ${(base / 1000).toFixed(2)} µs a call), counted by the kernel, % of a call (the empty programs' row is what counting and calling a program cost by themselves)`);
      for (const [key, name] of [['emptyHook', 'empty cgroup programs'], ['untagged', 'sensor loaded, untagged'], ['tagged10', 'tagged, 10 rules'], ['tagged100k', 'tagged, 100,000 rules']] as const) {
        const t = bpf[key][loop];
        const calls = COUNT[loop] + Math.floor(COUNT[loop] / 20) + 1; // with the warm-up
        console.log(`    ${name.padEnd(24)} ${(t.ns / calls).toFixed(0).padStart(6)} ns  ${((100 * t.ns) / calls / base).toFixed(2).padStart(5)}%  (${(t.runs / calls).toFixed(1)} program runs)`);
      }
    }
    for (const [key, name] of [['tagged10', '10 rules'], ['tagged100k', '100,000 rules']] as const) {
      const d = drains[key];
      console.log(
        `  supervisor, tagged TCP (${name}): ${median(d.map((x) => x.events))} connect events per run, ${median(d.map((x) => x.cpuPerEvent)).toFixed(1)} µs of its CPU per event, all in ${median(d.map((x) => x.lagMs))} ms after the loop ended`,
      );
    }
    if (foreign) console.log(`  note: other bridle BPF programs were loaded before ${foreign} of ${ROUNDS} "no sensor" runs (another supervisor or test): that baseline is not clean`);
    if (unknownForeign) console.log('  note: bpftool not available: could not check for other bridle sensors during "no sensor" runs');
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    const gone = server && server.exitCode === null && server.signalCode === null ? new Promise((r) => server!.once('exit', r)) : undefined;
    cleanup();
    await gone; // reaped, not left a zombie
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
