// The TypeScript decoder's offsets must equal the kernel structs' as compiled: read them from the BTF of
// the built objects and compare field by field.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { LAYOUT } from '../../src/kernel/layout.js';
import { PROCESS_OBJ } from '../../src/kernel/sensor.js';

function btfStructs(obj: string): Map<string, { size: number; fields: Map<string, number> }> {
  const text = execFileSync('bpftool', ['btf', 'dump', 'file', obj, 'format', 'raw'], { encoding: 'utf8' });
  const out = new Map<string, { size: number; fields: Map<string, number> }>();
  let cur: { size: number; fields: Map<string, number> } | undefined;
  for (const line of text.split('\n')) {
    const s = /^\[\d+\] STRUCT '([^']+)' size=(\d+)/.exec(line);
    if (s) {
      cur = { size: Number(s[2]), fields: new Map() };
      out.set(s[1]!, cur);
      continue;
    }
    const f = /^\s+'([^']+)' type_id=\d+ bits_offset=(\d+)/.exec(line);
    if (f && cur) cur.fields.set(f[1]!, Number(f[2]) / 8);
    else if (!line.startsWith('\t')) cur = undefined;
  }
  return out;
}

test('every struct the decoder reads has the offsets the BPF object was compiled with', () => {
  const btf = btfStructs(PROCESS_OBJ);
  for (const [name, want] of Object.entries(LAYOUT)) {
    const got = btf.get(name);
    assert.ok(got, `struct ${name} is in the BTF of ${PROCESS_OBJ}`);
    assert.equal(want.size, got.size, `sizeof(struct ${name})`);
    for (const [field, off] of Object.entries(want.fields)) {
      assert.equal(off, got.fields.get(field), `offsetof(struct ${name}, ${field})`);
    }
    assert.deepEqual([...got.fields.keys()].sort(), Object.keys(want.fields).sort(), `fields of struct ${name}`);
  }
});
