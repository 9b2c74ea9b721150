// The test file azure-pipelines-task-lib's MockTestRunner starts: the packaged entry run as is
// (noMockTask: the real index.js, nothing of it mocked), with the inputs already in the environment.
'use strict';
const { TaskMockRunner } = require('azure-pipelines-task-lib/mock-run');

new TaskMockRunner(process.env.SLSA_TEST_TASK_ENTRY).run(true);
