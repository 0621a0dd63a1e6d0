"""nginx for test_apps.py and scripts/bench: a file server, or a reverse proxy in front of
one, each a master with two forked worker processes (which run as nobody when we are root,
as a distribution's nginx does), logging to stderr.
"""

import os
import pwd

WORKERS = 2


def worker_uid():
    """The uid of nginx's workers. Root's clients must allow it over shm
    (SMCPRE_SHM_UIDS) when it is not ours."""
    return pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else os.geteuid()


def nginx_argv(work, name, port, root=None, upstream=None):
    """Writes work/<name>.conf and returns the command that runs nginx with it in the
    foreground. It listens on 127.0.0.1:port and serves the files under `root`, or, given
    `upstream` (a port), passes every request to 127.0.0.1:upstream over HTTP/1.1
    connections it keeps open and reuses (upstream keepalive), as a reverse proxy does.
    Instances in one work dir keep their pid files and temp dirs apart by name; the work
    dir is made readable for the workers."""
    user = "user nobody nogroup;" if os.geteuid() == 0 else ""
    if upstream is None:
        upstream_block, site = "", "root %s;" % root
    else:
        upstream_block = ("upstream backend { server 127.0.0.1:%d; keepalive 32; "
                          "keepalive_requests 100000; }" % upstream)
        site = ('location / { proxy_pass http://backend; proxy_http_version 1.1; '
                'proxy_set_header Connection ""; }')
    tmp = os.path.join(work, name)
    conf = tmp + ".conf"
    with open(conf, "w") as f:
        f.write("""daemon off; master_process on; worker_processes %d; %s
pid %s.pid; error_log stderr info;
events { worker_connections 1024; }
http {
  access_log off; sendfile on; keepalive_requests 100000;
  client_body_temp_path %s-cb; proxy_temp_path %s-px; fastcgi_temp_path %s-fc;
  uwsgi_temp_path %s-uw; scgi_temp_path %s-sc;
  %s
  server { listen 127.0.0.1:%d; %s }
}
""" % (WORKERS, user, tmp, tmp, tmp, tmp, tmp, tmp, upstream_block, port, site))
    os.chmod(work, 0o755)
    return ["nginx", "-c", conf, "-p", work]
