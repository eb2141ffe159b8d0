// Runs @feathersjs/adapter-tests against a Plume adapter-test-server at PLUME_URL (one store),
// through @feathersjs/rest-client. Every test the suite defines is selected: the list below is
// the suite's whole list, and adapter-tests itself warns about a name that is not in the suite
// (this file then fails) and mocha counts any skipped test as pending (scripts/adapter-tests.sh
// fails on that).
'use strict';

const { feathers } = require('@feathersjs/feathers');
const errors = require('@feathersjs/errors');
const rest = require('@feathersjs/rest-client');
const adapterTests = require('@feathersjs/adapter-tests');
const { PlumeService } = require('./plume-service');

const url = process.env.PLUME_URL;
if (!url) {
  throw new Error('PLUME_URL (the adapter-test-server URL) is required');
}

const TESTS = [
  '.options',
  '.events',
  '._get',
  '._find',
  '._create',
  '._update',
  '._patch',
  '._remove',
  '.get',
  '.get + $select',
  '.get + id + query',
  '.get + NotFound',
  '.get + NotFound (integer)',
  '.get + id + query id',
  '.find',
  '.remove',
  '.remove + $select',
  '.remove + id + query',
  '.remove + NotFound',
  '.remove + NotFound (integer)',
  '.remove + multi',
  '.remove + multi no pagination',
  '.remove + id + query id',
  '.update',
  '.update + $select',
  '.update + id + query',
  '.update + NotFound',
  '.update + NotFound (integer)',
  '.update + query + NotFound',
  '.update + id + query id',
  '.patch',
  '.patch + $select',
  '.patch + id + query',
  '.patch multiple',
  '.patch multiple no pagination',
  '.patch multi query same',
  '.patch multi query changed',
  '.patch + NotFound',
  '.patch + NotFound (integer)',
  '.patch + query + NotFound',
  '.patch + id + query id',
  '.create',
  '.create ignores query',
  '.create + $select',
  '.create multi',
  'internal .find',
  'internal .get',
  'internal .create',
  'internal .update',
  'internal .patch',
  'internal .remove',
  '.find + equal',
  '.find + equal multiple',
  '.find + $sort',
  '.find + $sort + string',
  '.find + $limit',
  '.find + $limit 0',
  '.find + $skip',
  '.find + $select',
  '.find + $or',
  '.find + $in',
  '.find + $nin',
  '.find + $lt',
  '.find + $lte',
  '.find + $gt',
  '.find + $gte',
  '.find + $ne',
  '.find + $gt + $lt + $sort',
  '.find + $or nested + $sort',
  '.find + $and',
  '.find + $and + $or',
  'params.adapter + paginate',
  'params.adapter + multi',
  '.find + paginate',
  '.find + paginate + query',
  '.find + paginate + $limit + $skip',
  '.find + paginate + $limit 0',
  '.find + paginate + params',
];

const connection = rest(url).fetch(fetch);
const app = feathers();
app.use('people', new PlumeService(connection.service('people'), { id: 'id', events: ['testing'] }));
app.use(
  'people-customid',
  new PlumeService(connection.service('people-customid'), { id: 'customid', events: ['testing'] })
);

const originalError = console.error;
console.error = (...args) => {
  if (String(args[0]).includes('is not part of the test suite')) {
    process.exitCode = 1;
  }
  originalError(...args);
};

describe(`Feathers adapter tests against Plume (${process.env.PLUME_STORE || 'unknown store'})`, () => {
  const testSuite = adapterTests(TESTS);
  testSuite(app, errors, 'people');
  testSuite(app, errors, 'people-customid', 'customid');
});
