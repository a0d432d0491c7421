// Globs over tool names (not paths): `*` matches any run of characters, '/' and '.' included, so that
// `deny: ["*"]` really denies every name; `?` matches one character; `[a-z]`, `[!x]` are classes;
// `{a,b}` is alternation; `\` escapes. Compiled to an anchored RegExp. Invalid globs throw GlobError.

export class GlobError extends Error {
  override name = 'GlobError';
}

export interface Glob {
  source: string;
  /** Exact, case-sensitive match. */
  test(name: string): boolean;
  /** Case-insensitive match after Unicode NFKC folding: used for deny lists so that other letter cases and
   *  compatibility look-alikes (fullwidth letters, ligatures) of a denied name are denied too. */
  testFolded(name: string): boolean;
}

/** The form deny lists compare: NFKC-normalised, lower-cased. */
export function foldName(name: string): string {
  return name.normalize('NFKC').toLowerCase();
}

export function compileGlob(source: string): Glob {
  if (source === '') throw new GlobError('empty pattern');
  // `*` and `?` stand for any characters, line breaks included (`deny: ["*"]` must catch "a\nb")
  const re = new RegExp(`^(?:${globToRegex(source)})$`, 'us');
  const folded = new RegExp(`^(?:${globToRegex(foldName(source))})$`, 'us');
  return {
    source,
    test: (name) => re.test(name),
    testFolded: (name) => folded.test(foldName(name)),
  };
}

/** Escapes a character for use outside a class (the 'u' flag rejects needless escapes such as \-). */
function escapeRe(ch: string): string {
  return /[\\^$.*+?()[\]{}|]/.test(ch) ? `\\${ch}` : ch;
}

/** Escapes a character inside a [...] class. */
function escapeClass(ch: string): string {
  return /[\\\]\[^-]/.test(ch) ? `\\${ch}` : ch;
}

function globToRegex(g: string): string {
  const chars = Array.from(g);
  let out = '';
  let depth = 0; // inside {…}
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i]!;
    switch (c) {
      case '\\': {
        const next = chars[++i];
        if (next === undefined) throw new GlobError(`'${g}': trailing '\\' escapes nothing`);
        out += escapeRe(next);
        break;
      }
      case '*':
        while (chars[i + 1] === '*') i++;
        out += '.*';
        break;
      case '?':
        out += '.';
        break;
      case '[': {
        let j = i + 1;
        let cls = '';
        if (chars[j] === '!' || chars[j] === '^') {
          cls += '^';
          j++;
        }
        const start = j;
        for (; j < chars.length && (chars[j] !== ']' || j === start); j++) {
          const ch = chars[j]!;
          if (ch === '\\') {
            const n = chars[++j];
            if (n === undefined) break;
            cls += escapeClass(n);
          } else if (ch === '-' && j > start && chars[j + 1] !== ']') cls += '-';
          else cls += escapeClass(ch);
        }
        if (j >= chars.length) throw new GlobError(`'${g}': '[' is not closed (use '\\[' for a literal bracket)`);
        try {
          new RegExp(`[${cls}]`, 'u');
        } catch {
          throw new GlobError(`'${g}': bad character class [${chars.slice(i + 1, j).join('')}]`);
        }
        out += `[${cls}]`;
        i = j;
        break;
      }
      case '{':
        depth++;
        out += '(?:';
        break;
      case '}':
        if (depth === 0) throw new GlobError(`'${g}': '}' without '{' (use '\\}' for a literal brace)`);
        depth--;
        out += ')';
        break;
      case ',':
        out += depth > 0 ? '|' : ',';
        break;
      case ']':
        throw new GlobError(`'${g}': ']' without '[' (use '\\]' for a literal bracket)`);
      default:
        out += escapeRe(c);
    }
  }
  if (depth !== 0) throw new GlobError(`'${g}': '{' is not closed (use '\\{' for a literal brace)`);
  return out;
}
