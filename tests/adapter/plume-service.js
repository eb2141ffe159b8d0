// A Feathers service object that forwards every call to a Plume service over
// @feathersjs/rest-client, shaped like a Feathers database adapter (AdapterBase) so the official
// @feathersjs/adapter-tests suite can drive it.
//
// The suite changes `service.options.multi` / `service.options.paginate` and passes
// `params.adapter` / `params.paginate`; a REST request carries none of these. `getOptions` merges
// them exactly as AdapterBase.getOptions does, and every call sends the result to the server in
// the header `x-plume-adapter-options` ({"multi": ..., "paginate": ...}), which only Plume's
// adapter-test-server honours (it copies both into params.extra, the per-call overrides of
// Plume's adapters). The multi checks, pagination and everything else happen in Plume.
'use strict';

const OPTIONS_HEADER = 'x-plume-adapter-options';

class PlumeService {
  constructor(remote, options) {
    this.remote = remote;
    this.options = { id: 'id', events: [], paginate: false, multi: false, ...options };
  }

  get id() {
    return this.options.id;
  }

  get events() {
    return this.options.events;
  }

  // AdapterBase.getOptions of @feathersjs/adapter-commons 5.
  getOptions(params) {
    const paginate = params.paginate !== undefined ? params.paginate : this.options.paginate;
    return { ...this.options, paginate, ...params.adapter };
  }

  forward(params = {}) {
    const { multi, paginate } = this.getOptions(params);
    const options = { multi, paginate: paginate === undefined ? false : paginate };
    return {
      query: params.query || {},
      headers: { ...(params.headers || {}), [OPTIONS_HEADER]: JSON.stringify(options) }
    };
  }

  find(params) {
    return this._find(params);
  }

  get(id, params) {
    return this._get(id, params);
  }

  create(data, params) {
    return this._create(data, params);
  }

  update(id, data, params) {
    return this._update(id, data, params);
  }

  patch(id, data, params) {
    return this._patch(id, data, params);
  }

  remove(id, params) {
    return this._remove(id, params);
  }

  _find(params) {
    return this.remote.find(this.forward(params));
  }

  _get(id, params) {
    return this.remote.get(id, this.forward(params));
  }

  _create(data, params) {
    return this.remote.create(data, this.forward(params));
  }

  _update(id, data, params) {
    return this.remote.update(id, data, this.forward(params));
  }

  _patch(id, data, params) {
    return this.remote.patch(id, data, this.forward(params));
  }

  _remove(id, params) {
    return this.remote.remove(id, this.forward(params));
  }
}

module.exports = { PlumeService, OPTIONS_HEADER };
