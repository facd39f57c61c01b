/**
 * The one escaping function of the output boundaries: nothing a terminal
 * obeys survives it, ordinary text is left exactly as it was, and JSON keeps
 * its meaning.
 */
import { assert, assertEquals } from "../_assert.ts";
import { escapeControl, escapeOutputLine, safeJson } from "../../lib/common/escape.ts";

/** Any character a terminal or a log reader could be made to obey. */
// deno-lint-ignore no-control-regex
const FORBIDDEN = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

Deno.test("escapeControl writes every control character as a visible escape", () => {
  assertEquals(escapeControl("nb-1-big-Data.db"), "nb-1-big-Data.db");
  assertEquals(escapeControl("caf\u00e9 \u65e5\u672c"), "caf\u00e9 \u65e5\u672c");
  assertEquals(escapeControl("\x1b]0;PWNED\x07"), "\\x1b]0;PWNED\\x07");
  assertEquals(escapeControl("a\x1b[2Jb"), "a\\x1b[2Jb");
  assertEquals(escapeControl("\u009b2J\x7f\x00"), "\\x9b2J\\x7f\\x00");
  assertEquals(escapeControl("line\nforged\tcol"), "line\\x0aforged\\x09col");
  assertEquals(escapeControl("\u202egnp.exe"), "\\u{202e}gnp.exe");
  assertEquals(escapeOutputLine("a\tb\nc"), "a\tb\\x0ac");
});

Deno.test("escaping leaves nothing forbidden in any of 65,536 single characters", () => {
  for (let code = 0; code < 0x10000; code++) {
    const c = String.fromCharCode(code);
    const text = `x${c}y`;
    assert(!FORBIDDEN.test(escapeControl(text)), `escapeControl U+${code.toString(16)}`);
    assert(!FORBIDDEN.test(escapeOutputLine(text).replaceAll("\t", "")), `line U+${code}`);
    const json = safeJson({ [text]: text });
    assert(!FORBIDDEN.test(json), `safeJson U+${code.toString(16)}`);
    assertEquals(JSON.parse(json), { [text]: text }, "safeJson keeps the value");
  }
});
