// Runs the packaged step under azure-pipelines-task-lib's MockTestRunner (Microsoft's own task test
// runner) and prints, as JSON, what it parsed, plus the output variables read with the task-lib's own
// command parser.  Usage: node mock_runner.js TASK_FOLDER   (the step's environment is this process's)
'use strict';
const path = require('path');
const { MockTestRunner } = require('azure-pipelines-task-lib/mock-test');
const { commandFromString } = require('azure-pipelines-task-lib/taskcommand');

async function main() {
  const task = process.argv[2];
  process.env.SLSA_TEST_TASK_ENTRY = path.join(task, 'index.js');
  const runner = new MockTestRunner(path.join(__dirname, 'mock_step.js'), path.join(task, 'task.json'));
  runner.nodePath = process.execPath; // the local node: the runner downloads one only when this is empty
  await runner.runAsync();
  const variables = {};
  for (const line of runner.stdout.split(/\r?\n/)) {
    const at = line.indexOf('##vso[task.setvariable ');
    if (at >= 0) {
      const command = commandFromString(line.substring(at));
      variables[command.properties.variable] = command.message;
    }
  }
  const { succeeded, failed, errorIssues, warningIssues, stdout, stderr } = runner;
  process.stdout.write(JSON.stringify({ succeeded, failed, errorIssues, warningIssues, variables, stdout, stderr }));
}

main();
