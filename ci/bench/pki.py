"""TLS and ACLs for benchmark clusters: one CA per run, a certificate per
server, an admin client certificate and the management token in one
directory that works as the clients' BERTH_DATA_DIR."""

import os
import secrets
import shutil
import subprocess
import tempfile
import time


class Pki:
    def __init__(self, berth, root):
        self.berth = berth
        self.dir = os.path.join(root, "pki")
        os.makedirs(self.dir, exist_ok=True)
        if not os.path.exists(os.path.join(self.dir, "ca.pem")):
            self._run("tls", "init", "--dir", self.dir)
            self._run("tls", "issue", "client", "admin", "--dir", self.dir)
            for ext in (".pem", "-key.pem"):
                os.rename(os.path.join(self.dir, "client-admin" + ext),
                          os.path.join(self.dir, "client" + ext))
            with open(os.path.join(self.dir, "token"), "w") as f:
                f.write(secrets.token_hex(24))

    def _run(self, *args):
        subprocess.run([self.berth, *args], check=True, stdout=subprocess.DEVNULL)

    def env(self, **extra):
        """The environment of a client (CLI, loadgen, hollow nodes)."""
        return {**os.environ, "BERTH_DATA_DIR": self.dir, **extra}

    def issue(self, role, name, ip, data):
        """A `role` certificate for `name` into `data` (ROLE.pem, ca.pem;
        servers also get the CA key, to sign joining agents)."""
        os.makedirs(data, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            for f in ("ca.pem", "ca-key.pem"):
                shutil.copy(os.path.join(self.dir, f), tmp)
            self._run("tls", "issue", role, name, "--san", ip, "--dir", tmp)
            for ext in (".pem", "-key.pem"):
                shutil.copy(os.path.join(tmp, f"{role}-{name}{ext}"),
                            os.path.join(data, role + ext))
        shutil.copy(os.path.join(self.dir, "ca.pem"), data)
        if role == "server":
            shutil.copy(os.path.join(self.dir, "ca-key.pem"), data)

    def bootstrap(self, addrs):
        """The management token, once the servers answer."""
        for _ in range(200):
            out = subprocess.run([self.berth, "acl", "bootstrap", "--secret-file",
                                  os.path.join(self.dir, "token")],
                                 env=self.env(BERTH_ADDR=addrs), capture_output=True, text=True)
            if out.returncode == 0 or "already bootstrapped" in out.stderr:
                return
            time.sleep(0.1)
        raise SystemExit(f"ACL bootstrap failed: {out.stderr}")
