// Feeds make_inputs.py's files to github-action-benchmark's own built code (not a copy):
// configFromJobInput (the step's `with:` inputs, read from INPUT_* variables as the runner
// passes them), extractResult (parses output-file-path for tool customSmallerIsBetter) and
// writeBenchmark (stores the point, finds the previous point of each name, and alerts --
// its findAlerts/getRatio are not exported, so they run inside writeBenchmark).
//
//   node check_action.js ACTION_DIST_SRC INPUTS_DIR [SCENARIO ...]
//
// Each scenario is two chart points: INPUTS_DIR/<scenario>_prev.json from commit 1111...,
// then <scenario>_cur.json from commit 2222..., into a fresh data file. Differences from the
// workflow's step, all outside the alert logic:
// - external-data-json-path instead of the gh-pages branch (no git; the same
//   addBenchmarkEntry picks the previous point);
// - comment-on-alert false, fail-on-alert true: a comment needs the GitHub API; with
//   fail-on-alert the action throws the very alert comment body (buildAlertComment) instead;
// - summary-always true, to print the action's comparison table (buildComment) for every
//   benchmark, alerting or not.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');

const [dist, inputs, ...wanted] = process.argv.slice(2);
if (!dist || !inputs) {
    console.error('usage: node check_action.js ACTION_DIST_SRC INPUTS_DIR [SCENARIO ...]');
    process.exit(2);
}
const THRESHOLD = process.env.ALERT_THRESHOLD || '107%';
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'gab-run-'));
const summaryFile = path.join(work, 'step-summary.md');
fs.writeFileSync(summaryFile, '');
const eventFile = path.join(work, 'event.json');
fs.writeFileSync(eventFile, '{}');

// The runner's environment; @actions/github reads it once, when first loaded.
Object.assign(process.env, {
    GITHUB_EVENT_NAME: 'push',
    GITHUB_EVENT_PATH: eventFile,
    GITHUB_REPOSITORY: 'example/loopbench',
    GITHUB_REF: 'refs/heads/main',
    GITHUB_WORKFLOW: 'benchmark',
    GITHUB_SERVER_URL: 'https://github.com',
    GITHUB_STEP_SUMMARY: summaryFile,
});

// The action's "::debug::" lines are hidden on a runner unless debugging; hide them here too.
const write = process.stdout.write.bind(process.stdout);
process.stdout.write = (chunk, ...rest) =>
    String(chunk).startsWith('::debug::') ? true : write(chunk, ...rest);

const load = (m) => require(require.resolve(m, { paths: [dist] }));
const github = load('@actions/github');
const { configFromJobInput } = require(path.join(dist, 'config.js'));
const { extractResult } = require(path.join(dist, 'extract.js'));
const { writeBenchmark } = require(path.join(dist, 'write.js'));

function setInputs(outputFile, dataFile) {
    const inputs = {
        name: 'Benchmark',
        tool: 'customSmallerIsBetter',
        'output-file-path': outputFile,
        'gh-pages-branch': 'gh-pages',
        'benchmark-data-dir-path': 'dev/bench',
        'auto-push': 'false',
        'alert-threshold': THRESHOLD,
        'comment-on-alert': 'false',
        'fail-on-alert': 'true',
        'summary-always': 'true',
        'save-data-file': 'true',
        'external-data-json-path': dataFile,
    };
    for (const [k, v] of Object.entries(inputs)) process.env[`INPUT_${k.toUpperCase()}`] = v;
}

function commit(id) {
    const who = { name: 'ci', email: 'ci@example.com', username: 'ci' };
    return { id, message: `commit ${id.slice(0, 7)}`, timestamp: '2026-04-01T00:00:00Z',
             url: `https://github.com/example/loopbench/commit/${id}`, author: who, committer: who };
}

function sameAsFile(parsed, file) {
    const raw = JSON.parse(fs.readFileSync(file, 'utf8'));
    const keys = ['name', 'unit', 'value', 'range', 'extra'];
    return raw.length === parsed.length &&
        raw.every((r, i) => keys.every((k) => r[k] === parsed[i][k]));
}

async function point(file, dataFile, id) {
    setInputs(file, dataFile);
    github.context.payload = { head_commit: commit(id) };
    const config = await configFromJobInput();
    const bench = await extractResult(config);
    console.log(`  extractResult(${path.basename(file)}): ${bench.benches.length} entries parsed, ` +
                `identical to the file: ${sameAsFile(bench.benches, file)}; ` +
                `alertThreshold=${config.alertThreshold}`);
    const before = fs.statSync(summaryFile).size;
    try {
        await writeBenchmark(bench, config);
        console.log('  writeBenchmark: no alert');
    } catch (e) {
        console.log('  writeBenchmark threw (fail-on-alert), its message = the alert comment:');
        console.log(e.message.replace(/^/gm, '    | '));
    }
    const summary = fs.readFileSync(summaryFile, 'utf8').slice(before);
    if (summary.trim()) {
        const rows = summary.split('\n').filter((l) => l.startsWith('| `'));
        console.log('  comparison table (summary-always):');
        for (const r of rows) console.log('    ' + r);
    }
}

async function main() {
    const scenarios = wanted.length ? wanted : fs.readdirSync(inputs)
        .filter((f) => f.endsWith('_prev.json')).map((f) => f.replace(/_prev\.json$/, '')).sort();
    for (const s of scenarios) {
        console.log(`\n=== ${s} (alert-threshold ${THRESHOLD}) ===`);
        const dataFile = path.join(work, `${s}-data.json`);
        for (const [label, id] of [['prev', '1'.repeat(40)], ['cur', '2'.repeat(40)]]) {
            console.log(` point ${label} (commit ${id.slice(0, 7)}):`);
            await point(path.join(inputs, `${s}_${label}.json`), dataFile, id);
        }
    }
}

main().catch((e) => {
    console.error('FAILED:', e);
    process.exit(1);
});
