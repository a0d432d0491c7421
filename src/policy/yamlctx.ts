// Walks a parsed YAML document with source positions, so every policy error names file:line:col.
// Sections of the policy (exec, network, mcp, ...) are validated with these helpers; errors are
// collected, not thrown, so one run reports every problem in the file.
import { isMap, isScalar, isSeq, LineCounter, type Document, type Node, type Pair, type YAMLMap } from 'yaml';

export interface PolicyProblem {
  file: string;
  line: number;
  col: number;
  message: string;
}

export class PolicyError extends Error {
  override name = 'PolicyError';
  constructor(readonly problems: PolicyProblem[]) {
    problems.sort((a, b) => a.line - b.line || a.col - b.col);
    super(problems.map((p) => `${p.file}:${p.line}:${p.col}: ${p.message}`).join('\n'));
  }
  /** The first problem, for callers that show one line. */
  get first(): PolicyProblem {
    return this.problems[0]!;
  }
}

export class YamlCtx {
  readonly problems: PolicyProblem[] = [];
  constructor(
    readonly file: string,
    readonly doc: Document.Parsed,
    private readonly lines: LineCounter,
  ) {}

  /** Position of a node (or of the document start when the node is missing). */
  pos(node: Node | null | undefined): { line: number; col: number } {
    const offset = node?.range?.[0] ?? 0;
    const p = this.lines.linePos(offset);
    return { line: p.line, col: p.col };
  }

  error(node: Node | null | undefined, message: string): void {
    this.problems.push({ file: this.file, ...this.pos(node), message });
  }

  /**
   * A mapping whose keys must come from `allowed`; unknown keys are errors (a typo in a security policy
   * must never silently drop a rule). Returns key → value node, or undefined when `node` is not a mapping.
   */
  mapping(node: Node | null | undefined, where: string, allowed: readonly string[]): Map<string, Node | null> | undefined {
    if (node == null) return new Map();
    if (!isMap(node)) {
      this.error(node, `${where} must be a mapping`);
      return undefined;
    }
    const out = new Map<string, Node | null>();
    for (const pair of (node as YAMLMap<Node, Node>).items as Pair<Node, Node | null>[]) {
      const key = isScalar(pair.key) ? String(pair.key.value) : undefined;
      if (key === undefined) {
        this.error(pair.key as Node, `${where}: keys must be plain strings`);
        continue;
      }
      if (!allowed.includes(key)) {
        this.error(pair.key as Node, `${where}: unknown key '${key}' (expected one of: ${allowed.join(', ')})`);
        continue;
      }
      if (out.has(key)) {
        this.error(pair.key as Node, `${where}: duplicate key '${key}'`);
        continue;
      }
      out.set(key, pair.value ?? null);
    }
    return out;
  }

  /** An open mapping (any string keys), e.g. mcp.servers. */
  entries(node: Node | null | undefined, where: string): [string, Node | null, Node][] {
    if (node == null) return [];
    if (!isMap(node)) {
      this.error(node, `${where} must be a mapping`);
      return [];
    }
    const out: [string, Node | null, Node][] = [];
    for (const pair of (node as YAMLMap<Node, Node>).items as Pair<Node, Node | null>[]) {
      if (!isScalar(pair.key)) {
        this.error(pair.key as Node, `${where}: keys must be plain strings`);
        continue;
      }
      out.push([String(pair.key.value), pair.value ?? null, pair.key as Node]);
    }
    return out;
  }

  seq(node: Node | null | undefined, where: string): Node[] {
    if (node == null) return [];
    if (!isSeq(node)) {
      this.error(node, `${where} must be a list`);
      return [];
    }
    return node.items as Node[];
  }

  string(node: Node | null | undefined, where: string, opts: { optional?: boolean } = {}): string | undefined {
    if (node == null) {
      if (!opts.optional) this.error(node, `${where} is required`);
      return undefined;
    }
    if (!isScalar(node) || (typeof node.value !== 'string' && typeof node.value !== 'number')) {
      this.error(node, `${where} must be a string`);
      return undefined;
    }
    const s = String(node.value);
    if (s === '') {
      this.error(node, `${where} must not be empty`);
      return undefined;
    }
    return s;
  }

  stringList(node: Node | null | undefined, where: string): string[] {
    if (node != null && isScalar(node)) {
      const one = this.string(node, where);
      return one === undefined ? [] : [one];
    }
    const out: string[] = [];
    this.seq(node, where).forEach((item, i) => {
      const s = this.string(item, `${where}[${i}]`);
      if (s !== undefined) out.push(s);
    });
    return out;
  }

  oneOf<T extends string>(node: Node | null | undefined, where: string, values: readonly T[], dflt: T): T {
    if (node == null) return dflt;
    const s = this.string(node, where);
    if (s === undefined) return dflt;
    if (!(values as readonly string[]).includes(s)) {
      this.error(node, `${where} must be one of ${values.join(' | ')}, not '${s}'`);
      return dflt;
    }
    return s as T;
  }

  integer(node: Node | null | undefined, where: string, min: number, max: number): number | undefined {
    if (node == null) return undefined;
    if (!isScalar(node) || typeof node.value !== 'number' || !Number.isInteger(node.value)) {
      this.error(node, `${where} must be a whole number`);
      return undefined;
    }
    if (node.value < min || node.value > max) {
      this.error(node, `${where} must be between ${min} and ${max}, not ${node.value}`);
      return undefined;
    }
    return node.value;
  }

  boolean(node: Node | null | undefined, where: string, dflt: boolean): boolean {
    if (node == null) return dflt;
    if (!isScalar(node) || typeof node.value !== 'boolean') {
      this.error(node, `${where} must be true or false`);
      return dflt;
    }
    return node.value;
  }

  /** The raw JS value of a node (for free-form sections such as argument conditions). */
  value(node: Node | null | undefined): unknown {
    return node == null ? undefined : (node as Node & { toJSON(): unknown }).toJSON();
  }
}

export { LineCounter };
