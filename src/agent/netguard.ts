// Network reach for the supervisor: the net sensor (kernel decisions) and bridle's resolver (host:
// rules), opened beside the process sensor and fed the network part of every policy. The supervisor
// holds one NetGuard; without cgroup v2 or the net object it runs without one and says why.
import type { Engine } from './engine.js';
import { DnsResolver, type Upstream } from './dns.js';
import { sessionName } from './ids.js';
import { decodeNet, NetSensor } from '../kernel/net.js';
import type { Sensor } from '../kernel/sensor.js';
import { compileNet, type CompiledNet } from '../policy/netcompile.js';
import type { Policy } from '../policy/types.js';

export interface NetGuardOptions {
  /** Upstream for policies without network.dns.upstream (default: /etc/resolv.conf). */
  upstream?: Upstream;
  /** Resolver: minimum time (s) an answered address stays allowed. */
  minTtl?: number;
  /** Do not start the resolver (port-53 traffic is then decided like any other). */
  noResolver?: boolean;
}

export class NetGuard {
  /** Resolves when the resolver listens (or failed to: see warnings). */
  readonly ready: Promise<void>;
  dns: DnsResolver | undefined;
  private closed = false;

  private constructor(
    readonly net: NetSensor,
    private readonly engine: Engine,
    private readonly warnings: string[],
    opts: NetGuardOptions,
  ) {
    // a session's DNS-allowed addresses go when the session ends
    engine.addSink({
      emit: (ev) => {
        if (ev.type !== 'session_end') return;
        for (const s of net.sessionsWithAddresses()) if (sessionName(s) === ev.session) net.forgetSession(s);
      },
    });
    this.ready = opts.noResolver
      ? Promise.resolve()
      : DnsResolver.start({
          net,
          policy: (id) => {
            const compiled = net.compiled(id);
            const slot = engine.policies.get(id);
            return compiled ? { compiled, monitor: slot?.policy.mode === 'monitor', name: slot?.policy.name ?? '' } : undefined;
          },
          emit: (ev) => engine.emit(ev),
          base: (ktime, session, pid) => engine.base('dns', ktime, session, pid),
          ...(opts.upstream ? { upstream: opts.upstream } : {}),
          ...(opts.minTtl !== undefined ? { minTtl: opts.minTtl } : {}),
        }).then(
          async (r) => {
            if (this.closed) await r.close();
            else this.dns = r;
          },
          (err: Error) => {
            warnings.push(`DNS resolver not started (host: rules cannot match): ${err.message}`);
          },
        );
  }

  /** Opens the net sensor on the process sensor's maps. Throws when the kernel or host cannot. */
  static open(sensor: Sensor, engine: Engine, warnings: string[], opts: NetGuardOptions = {}): NetGuard {
    const net = NetSensor.open({
      tags: sensor.map('tags'),
      procs: sensor.map('procs'),
      events: sensor.map('events'),
      onWarning: (w) => warnings.push(w),
    });
    return new NetGuard(net, engine, warnings, opts);
  }

  /** A record from the shared ring buffer that the process sensor does not know: ours, when it decodes. */
  onRaw(buf: Buffer): void {
    const r = decodeNet(buf);
    if (r) this.engine.handleNet(r);
  }

  /**
   * Compiles the network section; throws PolicyError before anything is written. `inForce`: the compile in
   * force, when the policy compiles again because a watched path changed.
   */
  static compile(policy: Policy, inForce?: CompiledNet): CompiledNet {
    return compileNet(policy, inForce);
  }

  /** Installs a compiled network section as policy `id` (one atomic switch in the kernel). */
  apply(id: number, compiled: CompiledNet): number {
    return this.net.applyPolicy(id, compiled);
  }

  /**
   * Connections made before a decision could see them are judged again (NetSensor.revisit). A failure
   * (a kernel without socket iterators) is a warning: connects and sends are still decided.
   */
  revisit(): void {
    try {
      this.net.revisit();
    } catch (err) {
      const w = `cannot judge existing connections again: ${(err as Error).message}`;
      if (!this.warnings.includes(w)) this.warnings.push(w);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.ready;
    await this.dns?.close();
    await this.net.close();
  }
}
