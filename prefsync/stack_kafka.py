"""Kafka broker of the local stack: Java check, jars, KRaft config, readiness probe.

The broker runs from the ``org.apache.kafka:kafka_2.13`` jars rather than a release
archive, because Maven Central is reachable wherever pip is and the jars can be cached
per version. :mod:`prefsync.stack` starts and stops the process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import escape

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from prefsync.errors import StackError

__all__ = [
    "DEFAULT_VERSION",
    "MIN_JAVA_VERSION",
    "broker_command",
    "check_java",
    "ensure_formatted",
    "ensure_jars",
    "jars_cached",
    "java_major_version",
    "prepare",
    "probe",
    "tail",
    "write_config",
]

DEFAULT_VERSION = "4.1.1"
MIN_JAVA_VERSION = 17  # Kafka 4.0 brokers need Java 17.

# Kafka 4.0 and 4.1 publish poms that depend on slf4j-api 1.7.36 and log4j 2.24.3 but
# ship no SLF4J binding, so without one the broker logs nothing. log4j-slf4j-impl is
# the log4j2 binding for SLF4J 1.x. Its own log4j-api and log4j-core dependencies are
# excluded so that the versions Kafka's pom names win.
LOG4J_SLF4J_BINDING = ("org.apache.logging.log4j", "log4j-slf4j-impl", "2.24.3")
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
COMPLETE_MARKER = ".complete"
HEAP = "512m"
# JVM options from Kafka's bin/kafka-run-class.sh, with a smaller heap.
JVM_OPTIONS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.prefsync</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>{binding_group}</groupId>
      <artifactId>{binding_artifact}</artifactId>
      <version>{binding_version}</version>
      <exclusions>
        <exclusion>
          <groupId>org.apache.logging.log4j</groupId>
          <artifactId>*</artifactId>
        </exclusion>
      </exclusions>
    </dependency>
  </dependencies>
</project>
"""

# log4j2's own shutdown hook would close the appender while the broker's shutdown hook
# still logs, so it is disabled. The appender flushes after every event.
_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="warn" shutdownHook="disable">
  <Appenders>
    <RollingFile name="broker" fileName="{log}" filePattern="{log}.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <SizeBasedTriggeringPolicy size="50 MB"/>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="warn"/>
    <Logger name="state.change.logger" level="warn"/>
    <Root level="info">
      <AppenderRef ref="broker"/>
    </Root>
  </Loggers>
</Configuration>
"""

_CLUSTER_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")


def check_java() -> tuple[str | None, str | None]:
    """Find java in $JAVA_HOME/bin, else on PATH, and return (path, problem).

    The problem is None when the java found is version 17 or newer.
    """
    java_home = os.environ.get("JAVA_HOME")
    java: str | None = None
    if java_home and os.access(Path(java_home, "bin", "java"), os.X_OK):
        java = str(Path(java_home, "bin", "java"))
    else:
        java = shutil.which("java")
    if java is None:
        return None, (
            "java not found on PATH or in $JAVA_HOME/bin: install Java 17 or newer "
            "(apt-get install -y default-jre-headless, which is Java 17 on Debian 12)"
        )
    version = java_major_version(java)
    if version is None:
        return java, f"could not read a Java version from `{java} -version`"
    if version < MIN_JAVA_VERSION:
        return java, (
            f"{java} is Java {version} but Kafka 4 needs Java {MIN_JAVA_VERSION} or "
            "newer: install one (apt-get install -y openjdk-17-jre-headless on Debian "
            "12) and put it first on PATH, or set JAVA_HOME to it"
        )
    return java, None


def java_major_version(java: str) -> int | None:
    """Return the major version that ``java -version`` prints (8 for 1.8), or None."""
    try:
        # The command is java from PATH or JAVA_HOME, run without a shell.
        result = subprocess.run(  # noqa: S603
            [java, "-version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):
        return int(match.group(2))
    return major


def prepare(
    *,
    java: str,
    mvn: str | None,
    version: str,
    libs_dir: Path,
    kafka_dir: Path,
    logs_dir: Path,
    port: int,
    controller_port: int,
    progress: Callable[[str], None],
) -> list[str]:
    """Fetch the jars, write the config, format the storage, return the broker command.

    Each step is skipped when its result is already there.

    Raises:
        StackError: from :func:`ensure_jars` or :func:`ensure_formatted`.
    """
    if not jars_cached(libs_dir):
        progress(f"fetching the Kafka {version} jars with Maven into {libs_dir}")
        started = time.monotonic()
        ensure_jars(version, libs_dir, mvn, logs_dir / "maven.log")
        progress(f"fetched the jars in {time.monotonic() - started:.1f} s")
    server_properties, log4j_config = write_config(
        kafka_dir, logs_dir / "kafka.log", port, controller_port
    )
    if ensure_formatted(java, libs_dir, server_properties, kafka_dir, version):
        progress(f"formatted the KRaft storage in {kafka_dir / 'data'}")
    return broker_command(java, libs_dir, server_properties, log4j_config, logs_dir)


def jars_cached(libs_dir: Path) -> bool:
    """Return whether ``libs_dir`` contains a complete download."""
    return (libs_dir / COMPLETE_MARKER).is_file()


def ensure_jars(version: str, libs_dir: Path, mvn: str | None, log_path: Path) -> Path:
    """Download the broker jars for ``version`` into ``libs_dir`` unless already there.

    The marker file is written last, so an interrupted download is deleted and
    fetched again on the next call.

    Raises:
        StackError: Maven is missing or the download failed.
    """
    if jars_cached(libs_dir):
        return libs_dir
    if mvn is None:
        raise StackError(
            f"Kafka {version} jars are not in {libs_dir} and mvn was not found on "
            "PATH: install Maven (apt-get install -y maven)"
        )
    if libs_dir.exists():
        shutil.rmtree(libs_dir)
    work_dir = libs_dir.parent
    work_dir.mkdir(parents=True, exist_ok=True)
    pom = work_dir / "pom.xml"
    group, artifact, binding_version = LOG4J_SLF4J_BINDING
    pom.write_text(
        _POM.format(
            version=escape(version),
            binding_group=group,
            binding_artifact=artifact,
            binding_version=binding_version,
        )
    )
    command = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(pom),
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        f"-DoutputDirectory={libs_dir}",
        "-DincludeScope=runtime",
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        # The command is mvn from PATH with arguments built here, run without a shell.
        result = subprocess.run(  # noqa: S603
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        raise StackError(
            f"Maven failed to fetch org.apache.kafka:kafka_2.13:{version} "
            f"(exit {result.returncode}); check that the version exists on Maven "
            f"Central and that Maven can reach it. Output in {log_path}:\n"
            + tail(log_path)
        )
    if not any(libs_dir.glob("kafka_2.13-*.jar")):
        raise StackError(
            f"Maven finished but {libs_dir} has no kafka_2.13 jar. See {log_path}"
        )
    (libs_dir / COMPLETE_MARKER).write_text(version + "\n")
    return libs_dir


def write_config(
    kafka_dir: Path, log_path: Path, port: int, controller_port: int
) -> tuple[Path, Path]:
    """Write ``server.properties`` and ``log4j2.xml`` and return their paths.

    The files are rewritten on every start so that port changes take effect. The
    quorum is static (``controller.quorum.voters``), so a changed controller port
    needs no re-format.
    """
    kafka_dir.mkdir(parents=True, exist_ok=True)
    properties = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": (
            f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(kafka_dir / "data"),
        "num.partitions": "6",
        # Fewer than the default 50, so the first consumer group joins faster.
        "offsets.topic.num.partitions": "6",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "min.insync.replicas": "1",
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": "0",
    }
    server_properties = kafka_dir / "server.properties"
    server_properties.write_text(
        "".join(f"{key}={value}\n" for key, value in properties.items())
    )
    log4j_config = kafka_dir / "log4j2.xml"
    log4j_config.write_text(_LOG4J2.format(log=escape(str(log_path))))
    return server_properties, log4j_config


def ensure_formatted(
    java: str, libs_dir: Path, server_properties: Path, kafka_dir: Path, version: str
) -> bool:
    """Format the KRaft storage once, and return whether it was formatted now.

    ``format.json`` is written after a successful format. A data folder without it
    is left over from a failed format and is deleted.

    Raises:
        StackError: the data was formatted by another Kafka version, or the format
            command failed.
    """
    marker = kafka_dir / "format.json"
    data_dir = kafka_dir / "data"
    if marker.is_file():
        formatted_by = json.loads(marker.read_text()).get("kafka_version")
        if formatted_by != version:
            raise StackError(
                f"the Kafka data in {data_dir} was formatted by Kafka {formatted_by}, "
                f"not {version}: set PREFSYNC_KAFKA_VERSION={formatted_by}, or run "
                "`prefsync stack down --purge` to delete the stack data"
            )
        return False
    if data_dir.exists():
        shutil.rmtree(data_dir)
    classpath = str(libs_dir / "*")
    storage_tool = [java, "-Xmx256m", "-cp", classpath, "kafka.tools.StorageTool"]
    output = _run_tool([*storage_tool, "random-uuid"], "StorageTool random-uuid")
    cluster_id = output.strip().splitlines()[-1] if output.strip() else ""
    if not _CLUSTER_ID.match(cluster_id):
        raise StackError(
            f"kafka.tools.StorageTool random-uuid printed {cluster_id!r}, "
            "not a 22-character cluster id"
        )
    _run_tool(
        [*storage_tool, "format", "-t", cluster_id, "-c", str(server_properties)],
        "StorageTool format",
    )
    marker.write_text(
        json.dumps({"cluster_id": cluster_id, "kafka_version": version}) + "\n"
    )
    return True


def broker_command(
    java: str,
    libs_dir: Path,
    server_properties: Path,
    log4j_config: Path,
    logs_dir: Path,
) -> list[str]:
    """Return the command line that runs the broker in the foreground.

    A JVM crash report goes to ``logs_dir``.
    """
    return [
        java,
        f"-Xmx{HEAP}",
        *JVM_OPTIONS,
        f"-XX:ErrorFile={logs_dir / 'kafka-hs_err_pid%p.log'}",
        f"-Dlog4j2.configurationFile={log4j_config}",
        "-cp",
        str(libs_dir / "*"),
        "kafka.Kafka",
        str(server_properties),
    ]


def probe(bootstrap: str, timeout: float = 5.0) -> bool:
    """Return whether the broker at ``bootstrap`` returns metadata naming a broker."""
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=min(timeout, 1.0)):
            pass
    except OSError:
        return False
    # log_level 0 keeps librdkafka from printing a connection error per attempt
    # while the broker is still starting.
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return bool(metadata.brokers)


def tail(path: Path, lines: int = 30) -> str:
    """Return the last ``lines`` lines of ``path``, or a note that it does not exist."""
    if not path.is_file():
        return f"({path} does not exist)"
    with path.open("rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - 64 * 1024))
        text = handle.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _run_tool(command: list[str], description: str) -> str:
    # The command is java from PATH or JAVA_HOME, run without a shell.
    result = subprocess.run(  # noqa: S603
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(
            f"Kafka {description} failed with exit {result.returncode}:\n"
            f"{result.stdout}{result.stderr}"
        )
    return result.stdout
