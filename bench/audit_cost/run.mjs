// Runs a wasm32-wasip1 program in node (V8) with stub proxy-wasm imports (never called).
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
const wasi = new WASI({ version: 'preview1', returnOnExit: true, args: ['x', ...process.argv.slice(3)], env: {} });
const mod = await WebAssembly.compile(await readFile(process.argv[2]));
const imports = wasi.getImportObject();
for (const imp of WebAssembly.Module.imports(mod)) {
  if (!(imp.module in imports)) imports[imp.module] = {};
  if (!(imp.name in imports[imp.module])) imports[imp.module][imp.name] = () => 0;
}
const inst = await WebAssembly.instantiate(mod, imports);
const code = wasi.start({ exports: { memory: inst.exports.memory, _start: inst.exports._start } });
// Leave without V8's teardown of the instance: node 20 sometimes crashes there (SIGSEGV
// after the program has finished and printed).
process.reallyExit(code ?? 0);
