-- Prosody 0.12 for scripts/compare.sh (@PORT@, @DIR@, @ITER@, @AUTH@, @C2S_PORTS@,
-- @DIRECT_TLS_PORTS@, @SSL@, @REQUIRE_TLS@ filled in by the script).
-- Everything not named here is Prosody's default. Each changed setting says why.
data_path = "@DIR@/data"
pidfile = "@DIR@/prosody.pid"
log = { warn = "@DIR@/prosody.log" }   -- no per-stanza logging, like the others

interfaces = { "127.0.0.1" }
c2s_ports = { @C2S_PORTS@ }
c2s_direct_tls_ports = { @DIRECT_TLS_PORTS@ }
@SSL@
s2s_ports = { }
legacy_ssl_ports = { }

-- The same transport as martlet and ejabberd (compare.sh --tls).
c2s_require_encryption = @REQUIRE_TLS@
s2s_require_encryption = false
allow_unencrypted_plain_auth = true

-- internal_hashed (default of compare.sh): PLAIN is checked against SCRAM-SHA-256 secrets
-- with martlet's iteration count, so each login costs the same PBKDF2 on every server
-- (Prosody's defaults: SHA-1, 10000); internal_plain with --peer-passwords plain.
authentication = "@AUTH@"
password_hash = "SHA-256"
default_iteration_count = @ITER@
storage = "internal"

-- Lua 5.4's generational collector instead of the incremental default: with the default,
-- `paper 1000` showed collector pauses (p90 3.3 ms, p99 13.5 ms; generational 0.3 / 0.7-4.7 ms)
-- and 25 % fewer logins/s. A documented one-line knob any Prosody-on-5.4 operator may set.
gc = { mode = "generational" }

network_settings = {
	tcp_backlog = 4096;   -- martlet's listen backlog (Prosody default 128)
	nagle = false;        -- martlet and ejabberd set TCP_NODELAY; Nagle would add latency
}

-- What martlet serves too: roster, disco, ping, version (presence, message, iq, offline and
-- c2s are loaded by Prosody itself). No mod_limits (its c2s rate limit would throttle the
-- load), no mod_register (nor its rate limits), no carbons, MAM, smacks, HTTP. mod_tls offers
-- STARTTLS only when `ssl` is set (compare.sh --tls).
modules_enabled = { "roster"; "saslauth"; "tls"; "disco"; "ping"; "version" }
modules_disabled = { "s2s"; "s2s_auth_certs" }

VirtualHost "localhost"

-- @ROOM_MODE_BEGIN@ compare.sh room only: XEP-0045 at conference.localhost, at Prosody's
-- defaults. Prosody 0.12's MUC has no occupant limit to raise, and no rate limit of its own
-- (mod_muc_limits is a community module, not loaded); rooms are locked until the owner's
-- form (muc_room_locking), which loadgen submits, with presence broadcast as on the others.
Component "conference.localhost" "muc"
-- @ROOM_MODE_END@
