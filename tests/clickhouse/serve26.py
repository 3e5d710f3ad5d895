#!/usr/bin/env python3
"""A private ClickHouse 26.x server for the tests, from PyPI's chdb-core.

chdb-core ships ClickHouse's engine as clickhouse-local; clickhouse-local
opens the real HTTP and native listeners on `SYSTEM START LISTEN`. This
script writes the server's config.xml into DIR (clickhouse-local reads it
from its working directory), starts both listeners, and serves until
SIGTERM or SIGINT, which it turns into a line written to a FIFO that the
blocking statement is reading.

usage: serve26.py DIR HTTP_PORT TCP_PORT [PASSWORD]

Besides `default` (no password), with PASSWORD the user `logferry` logs in
with it.
"""
import os
import signal
import sys
import threading
from xml.sax.saxutils import escape


def users(password):
    # clickhouse-local reads users only from a user directory, not from
    # a <users> section of its config.
    logferry = "" if password is None else f"""
    <logferry>
      <password>{escape(password)}</password>
      <networks><ip>::/0</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </logferry>"""
    return f"""<clickhouse>
  <profiles><default></default></profiles>
  <quotas><default></default></quotas>
  <users>
    <default>
      <password></password>
      <networks><ip>::/0</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
      <access_management>1</access_management>
    </default>{logferry}
  </users>
</clickhouse>
"""


def config(dir_, http_port, tcp_port):
    return f"""<clickhouse>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <logger>
    <level>information</level>
    <log>{dir_}/log.txt</log>
    <errorlog>{dir_}/err.txt</errorlog>
  </logger>
  <user_files_path>{dir_}/user_files/</user_files_path>
  <tmp_path>{dir_}/tmp/</tmp_path>
  <query_log>
    <database>system</database>
    <table>query_log</table>
    <flush_interval_milliseconds>1000</flush_interval_milliseconds>
  </query_log>
  <user_directories><users_xml><path>{dir_}/users.xml</path></users_xml></user_directories>
</clickhouse>
"""


def main():
    dir_ = os.path.abspath(sys.argv[1])
    http_port, tcp_port = int(sys.argv[2]), int(sys.argv[3])
    password = sys.argv[4] if len(sys.argv) > 4 else None
    for sub in ("data", "user_files", "tmp", "empty"):
        os.makedirs(os.path.join(dir_, sub), exist_ok=True)
    with open(os.path.join(dir_, "config.xml"), "w") as f:
        f.write(config(dir_, http_port, tcp_port))
    with open(os.path.join(dir_, "users.xml"), "w") as f:
        f.write(users(password))
    stop = os.path.join(dir_, "stop.fifo")
    if not os.path.exists(stop):
        os.mkfifo(stop)

    # Every thread, the engine's too, inherits the blocked mask; one helper
    # collects the signals and ends the blocking statement.
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)

    def on_signal():
        signal.sigwait(signals)
        with open(stop, "w") as f:
            f.write("stop\n")

    threading.Thread(target=on_signal, daemon=True).start()
    # Imported from an empty directory, served from the server's own.
    os.chdir(os.path.join(dir_, "empty"))
    from chdb import _chdb  # noqa: E402
    os.chdir(dir_)
    _chdb.query(
        "SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; "
        f"SELECT count() FROM file('{stop}', 'LineAsString') FORMAT Null",
        "TSV",
        path=os.path.join(dir_, "data"),
    )


if __name__ == "__main__":
    main()
