// Package openhim is a client for the parts of the OpenHIM core management API
// that a mediator uses: registration, heartbeats carrying console config,
// asynchronous transaction completion, and the application/json+openhim
// response format a mediator returns to core's router.
//
// The behaviour follows core's source (jembi/openhim-core-js) as summarised in
// docs/protocols.md, OpenHIM core.
package openhim
