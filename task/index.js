// SlsaProvenance@1 entry: find a trusted Python that the package ships dependencies for, start the
// bundled package, let it report. Python gets only the variables it needs, by environment (never argv),
// a PATH of trusted system folders, and runs isolated without site-packages (-I -S), so PYTHONPATH,
// PYTHONHOME, a PATH entry that an earlier step set or a package installed beside Python cannot change
// what runs.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const PASS = /^(INPUT_|ENDPOINT_|SECRET_SYSTEM_ACCESSTOKEN$|SECRET_AGENT_PROXYPASSWORD$|SECRET_AGENT_CLIENTCERTPASSWORD$|SYSTEM_|BUILD_|AGENT_|TF_BUILD$|SLSA_|DOCKER_CONFIG$|HOME$|USERPROFILE$|TEMP$|TMP$|TMPDIR$|SYSTEMROOT$|WINDIR$|COMSPEC$|LANG$|LC_ALL$|REQUESTS_CA_BUNDLE$|HTTPS?_PROXY$|NO_PROXY$)/i;
const LAUNCHER = path.join(__dirname, 'launch.py');
const WINDOWS = process.platform === 'win32';
const SYSTEM_PYTHONS = ['/usr/bin/python3', '/usr/local/bin/python3', '/opt/homebrew/bin/python3'];

// A ##vso message that no name in it (a folder on PATH, say) can end early or turn into a command.
function escape(text) {
  const line = text.replace(/%/g, '%AZP25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
  return line.replace(/##vso\[/g, '##vso\u200b[').replace(/##\[/g, '##\u200b[');
}
function fail(message) {
  console.log(`##vso[task.logissue type=error]${escape(message)}`);
  console.log(`##vso[task.complete result=Failed]${escape(message)}`);
}

// The targets the package ships dependencies for: `platform-machine-cpXY`, the keys of lib/index.json.
function shippedTargets() {
  return Object.keys(JSON.parse(fs.readFileSync(path.join(__dirname, 'lib', 'index.json'), 'utf8')));
}

function versionsOf(targets) {
  const versions = new Set(targets.map((t) => t.replace(/^.*-cp(\d)(\d+)$/, '$1.$2')));
  return [...versions].sort((a, b) => Number(a.split('.')[1]) - Number(b.split('.')[1]));
}

// The interpreter UsePythonVersion@0 put on PATH, where the tool cache holds one in the exact layout it
// writes (azure-pipelines-tool-lib's cacheDir, UsePythonVersion's binDir): <tools>/Python/<version>/<arch>
// with the <arch>.complete marker beside it, python3 in its bin/ (on PATH) or python.exe in it (Windows).
// Anything else under the tool cache is not taken: jobs of other pipelines may write there too.
function toolCachePython(dir, tools) {
  const parts = path.relative(path.join(path.resolve(tools), 'Python'), path.resolve(dir)).split(path.sep);
  const [version, arch, bin] = parts;
  if (parts.length !== (WINDOWS ? 2 : 3) || (!WINDOWS && bin !== 'bin')) return null;
  if (!/^\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?$/.test(version) || !['x64', 'x86', 'arm64'].includes(arch)) return null;
  const marker = path.join(path.resolve(tools), 'Python', version, `${arch}.complete`);
  if (!fs.existsSync(marker) || !fs.statSync(marker).isFile()) return null;
  return path.join(path.resolve(dir), WINDOWS ? 'python.exe' : 'python3');
}

// UsePythonVersion's tool cache first (the agent's own folder), then the system's interpreters.
function candidates(env, versions) {
  const tools = env.AGENT_TOOLSDIRECTORY;
  const found = (env.PATH || '').split(path.delimiter).filter((dir) => tools && dir)
    .map((dir) => toolCachePython(dir, tools)).filter(Boolean).map((python) => [python]);
  if (!WINDOWS) return found.concat(SYSTEM_PYTHONS.map((p) => [p]));
  const launcher = path.join(env.SYSTEMROOT || 'C:\\Windows', 'py.exe');
  return found.concat([...versions].reverse().map((v) => [launcher, `-${v}`]), [[launcher, '-3']]);
}

// What an interpreter is, as launch.py computes it: its target and version, or why it cannot say.
function probe([exe, ...args]) {
  const run = spawnSync(exe, [...args, '-I', '-S', LAUNCHER, '--target'], { encoding: 'utf8', timeout: 60000 });
  const [target, version] = (run.stdout || '').trim().split(/\s+/);
  if (run.status === 0 && /-cp\d+$/.test(target || '') && version) return { target, version };
  return { problem: run.error ? run.error.code : `exit code ${run.status}` };
}

function findPython(env, targets) {
  const tried = [];
  for (const candidate of candidates(env, versionsOf(targets))) {
    if (!fs.existsSync(candidate[0])) continue;
    const facts = probe(candidate);
    if (targets.includes(facts.target)) return { python: candidate, tried };
    tried.push({ name: candidate.join(' '), ...facts });
  }
  return { python: null, tried };
}

function noPython(tried, targets) {
  const platform = tried.map((t) => t.target).filter(Boolean).map((t) => t.replace(/-cp\d+$/, ''))[0];
  const here = platform ? targets.filter((t) => t.startsWith(`${platform}-cp`)) : targets;
  const versions = versionsOf(here.length ? here : targets);
  const found = tried.length
    ? tried.map((t) => (t.version ? `${t.name} (Python ${t.version}, ${t.target})` : `${t.name} (cannot run: ${t.problem})`)).join('; ')
    : `none (looked in UsePythonVersion's tool cache on PATH, then ${WINDOWS ? 'py.exe' : SYSTEM_PYTHONS.join(', ')})`;
  return `SlsaProvenance@1 ships its dependencies for Python ${versions.join(', ')}${platform ? ` on ${platform}` : ''}, ` +
    `and no interpreter it trusts is one of them. Found: ${found}. ` +
    `Add UsePythonVersion@0 with versionSpec '${versions.includes('3.12') ? '3.12' : versions[versions.length - 1]}' before this step.`;
}

// Where Python's child processes (git, for submodules) are found: trusted system folders only, never
// the job's PATH, which earlier steps can prepend to.
function trustedPath(env) {
  if (WINDOWS) {
    const root = env.SYSTEMROOT || 'C:\\Windows';
    const agentGit = env.AGENT_HOMEDIRECTORY ? [path.join(env.AGENT_HOMEDIRECTORY, 'externals', 'git', 'cmd')] : [];
    const programs = env.ProgramFiles || 'C:\\Program Files';
    return [...agentGit, path.join(programs, 'Git', 'cmd'), path.join(root, 'System32'), root, path.join(root, 'System32', 'Wbem')].join(';');
  }
  const system = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
  return (process.platform === 'darwin' ? ['/opt/homebrew/bin', ...system] : system).join(':');
}

function main() {
  const targets = shippedTargets();
  const { python, tried } = findPython(process.env, targets);
  if (!python) return fail(noPython(tried, targets));
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => PASS.test(name)));
  env.PATH = trustedPath(process.env);
  env.SLSA_PYTHON = python.join(' ');
  const run = spawnSync(python[0], [...python.slice(1), '-I', '-S', LAUNCHER, 'task'], { env, stdio: 'inherit' });
  if (run.error || run.status !== 0) fail(`the Python step ended abnormally (${run.error || `exit code ${run.status}`})`);
}

main();
process.exitCode = 0;
