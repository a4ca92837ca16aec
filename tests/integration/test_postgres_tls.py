"""TLS to PostgreSQL (`[storage] postgres_tls = "verify-full"`, issue 9): with the right CA
every connection of the pool is encrypted and the server works; with a CA the database's
certificate does not chain to, martlet refuses to start and says why. The scratch server
(scripts/postgres-scratch.sh) has TLS on, with a CA of its own at DIR/ca.crt."""
import asyncio
import os
import subprocess

from clients import close, login
from conftest import POSTGRES_URL_VAR
from test_operator import serve_expecting_refusal

CA = os.environ.get("MARTLET_TEST_POSTGRES_CA", "/tmp/martlet-postgres/ca.crt")


def ssl_connections(url, database):
    """(encrypted, total) connections to `database` other than psql's own."""
    done = subprocess.run(["psql", url, "-qAt", "-c",
                           "select count(*) filter (where s.ssl), count(*) from pg_stat_activity a "
                           f"join pg_stat_ssl s using (pid) where a.datname = '{database}' and a.pid <> pg_backend_pid()"],
                          check=True, capture_output=True, text=True)
    encrypted, total = done.stdout.strip().split("|")
    return int(encrypted), int(total)


def test_verified_tls_to_postgres_encrypts_every_connection(martlet_server, postgres_storage):
    storage = dict(postgres_storage, postgres_tls="verify-full", postgres_ca_file=CA)
    server = martlet_server(storage=storage)

    async def run():
        alice = await login(server, "alice")
        bob = await login(server, "bob")
        bob.send_message(mto="alice@localhost", mbody="over TLS to the database", mtype="chat")
        assert (await alice.next_message())["body"] == "over TLS to the database"
        await close(alice, bob)

    asyncio.run(run())
    database = postgres_storage["postgres_url"].rsplit("/", 1)[1]
    encrypted, total = ssl_connections(os.environ[POSTGRES_URL_VAR], database)
    assert total > 0 and encrypted == total, f"{encrypted} of {total} connections encrypted"


def test_a_database_certificate_that_does_not_chain_to_the_ca_is_refused(martlet_server, postgres_storage, tmp_path):
    storage = dict(postgres_storage, postgres_tls="verify-full", postgres_ca_file=CA)
    server = martlet_server(storage=storage)  # made (accounts added) with the right CA
    server.stop()
    other_ca = tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(tmp_path / "other.key"), "-out", str(other_ca)], check=True, capture_output=True)
    server.config.write_text(server.config.read_text().replace(CA, str(other_ca)))
    code, out = serve_expecting_refusal(server)
    assert code != 0
    assert "invalid peer certificate" in out, out[-2000:]
