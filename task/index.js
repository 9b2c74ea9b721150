// SlsaProvenance@1 entry: find a trusted Python 3.11+, start the bundled package, let it report.
// Python gets only the variables it needs, by environment (never argv), and runs isolated (-I), so
// PYTHONPATH, PYTHONHOME or a PATH entry that an earlier step set cannot change what runs.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const NEEDS = 'SlsaProvenance@1 needs Python 3.11+ on the agent; add UsePythonVersion@0 before it';
const PASS = /^(INPUT_|ENDPOINT_|SECRET_SYSTEM_ACCESSTOKEN$|SYSTEM_|BUILD_|AGENT_|TF_BUILD$|SLSA_|HOME$|USERPROFILE$|TEMP$|TMP$|TMPDIR$|SYSTEMROOT$|WINDIR$|COMSPEC$|LANG$|LC_ALL$|REQUESTS_CA_BUNDLE$|HTTPS?_PROXY$|NO_PROXY$)/i;

function escape(text) { return text.replace(/%/g, '%AZP25').replace(/\r/g, '%0D').replace(/\n/g, '%0A'); }
function fail(message) {
  console.log(`##vso[task.logissue type=error]${escape(message)}`);
  console.log(`##vso[task.complete result=Failed]${escape(message)}`);
}

// UsePythonVersion's tool cache first (the agent's own folder), then the system's interpreters.
function candidates(env) {
  const found = [];
  const tools = env.AGENT_TOOLSDIRECTORY;
  const windows = process.platform === 'win32';
  for (const dir of (env.PATH || '').split(path.delimiter)) {
    if (tools && dir && path.resolve(dir).startsWith(path.join(path.resolve(tools), 'Python') + path.sep)) {
      found.push([path.join(dir, windows ? 'python.exe' : 'python3')]);
    }
  }
  if (windows) return found.concat([[path.join(env.SYSTEMROOT || 'C:\\Windows', 'py.exe'), '-3']]);
  return found.concat(['/usr/bin/python3', '/usr/local/bin/python3', '/opt/homebrew/bin/python3'].map((p) => [p]));
}

function findPython(env) {
  for (const [exe, ...args] of candidates(env)) {
    if (!fs.existsSync(exe)) continue;
    const probe = spawnSync(exe, [...args, '-I', '-c', 'import sys; print(sys.version_info >= (3, 11))'], { encoding: 'utf8' });
    if (probe.status === 0 && probe.stdout.trim() === 'True') return [exe, ...args];
  }
  return null;
}

function main() {
  const python = findPython(process.env);
  if (!python) return fail(NEEDS);
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => PASS.test(name)));
  env.SLSA_PYTHON = python.join(' ');
  const launcher = path.join(__dirname, 'launch.py');
  const run = spawnSync(python[0], [...python.slice(1), '-I', launcher, 'task'], { env, stdio: 'inherit' });
  if (run.error || run.status !== 0) fail(`the Python step ended abnormally (${run.error || `exit code ${run.status}`})`);
}

main();
process.exitCode = 0;
