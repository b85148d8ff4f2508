package store

// The audit outbox. An audit event that records a state change is written
// in the same transaction as the change (Tx.Audit), into audit_outbox,
// and commits with it. The gateway's audit writer then moves staged events
// into the hash chain (audit.SQLite.Drain, in one transaction with their
// removal from the outbox), and opening the trail moves whatever a crashed
// process left. So a change is never durable without its event, and the
// chain never holds an event whose change was rolled back.
