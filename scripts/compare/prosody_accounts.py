"""Writes Prosody accounts user1..userN straight into its internal file storage, so
provisioning takes seconds instead of one prosodyctl run per account. With `scram`, in the
format of mod_auth_internal_hashed (SCRAM secrets as hex, RFC 5802); with `plain`, in
mod_auth_internal_plain's.

    prosody_accounts.py ACCOUNTS_DIR N PASSWORD scram|plain ITERATIONS

One salt serves every account: the secret is derived once, and a login's PBKDF2 costs the
same whatever the salt. SHA-256 matches `password_hash = "SHA-256"` in prosody.cfg.lua.
"""
import hashlib
import hmac
import os
import sys


def scram_sha256(password: bytes, salt: bytes, iterations: int):
    salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return hashlib.sha256(client_key).hexdigest(), server_key.hex()


def main():
    accounts_dir, n, password, mode, iterations = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    if mode == "plain":
        record = f'return {{\n\t["password"] = "{password}";\n}};\n'
    else:
        salt = "martlet-compare-salt"
        stored_key, server_key = scram_sha256(password.encode(), salt.encode(), iterations)
        record = (
            "return {\n"
            f'\t["iteration_count"] = {iterations};\n'
            f'\t["salt"] = "{salt}";\n'
            f'\t["server_key"] = "{server_key}";\n'
            f'\t["stored_key"] = "{stored_key}";\n'
            "};\n"
        )
    os.makedirs(accounts_dir, exist_ok=True)
    for i in range(1, n + 1):
        with open(os.path.join(accounts_dir, f"user{i}.dat"), "w") as f:
            f.write(record)


if __name__ == "__main__":
    main()
