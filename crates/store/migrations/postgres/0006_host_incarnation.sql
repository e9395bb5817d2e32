-- Which process holds a host's lease: a second process started under the
-- same host id finds the lease held by another incarnation and refuses to
-- run, instead of both signing calls and events as one host.
ALTER TABLE hosts ADD COLUMN incarnation TEXT NOT NULL DEFAULT '';
