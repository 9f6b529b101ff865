// The golden transcript of node/testdata (PROTOCOL.md §3): every server
// frame decodes to its decoded form, and every client frame this codec
// encodes decodes to the same map the transcript shows.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { decode, encode } from "@msgpack/msgpack";

const file = new URL("../../../../node/testdata/transcript.txt", import.meta.url);

test("the golden transcript decodes frame by frame", () => {
  const lines = readFileSync(file, "utf8").split("\n").filter((l) => /^[CS] /.test(l));
  let frames = 0;
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const [dir, json] = [lines[i]![0], lines[i]!.slice(2)];
    const hex = lines[i + 1]!.slice(2);
    assert.equal(lines[i + 1]![0], dir, `line pair ${i}: direction`);
    const want = JSON.parse(json);
    const got = decode(Buffer.from(hex, "hex"));
    assert.deepEqual(got, want, `${dir} frame ${json}`);
    if (dir === "C") assert.deepEqual(decode(encode(want)), want, `our encoding of ${json}`);
    frames++;
  }
  assert.ok(frames > 20, `only ${frames} frames`);
});
