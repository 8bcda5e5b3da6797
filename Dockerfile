# archop images: `--target operator` (the kopf operator) and `--target app` (the demo app), one build stage.
# Classic-builder compatible (docker 20.10, no BuildKit features). BASE_IMAGE is either the official
# python:3.11-slim or a Debian bookworm image with python3 + python3-venv from Debian (/usr/bin/python3):
# both give `python3 -m venv`, and everything below uses /opt/venv/bin explicitly.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# Optional package index (a mirror for air-gapped builds): --build-arg PIP_INDEX=https://mirror/simple
ARG PIP_INDEX=
ARG PIP_EXTRA_INDEX=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
WORKDIR /src
# Dependencies first, from pyproject.toml alone: this layer survives source-only changes.
COPY pyproject.toml ./
RUN /opt/venv/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && /opt/venv/bin/pip install ${PIP_INDEX:+--index-url "$PIP_INDEX"} ${PIP_EXTRA_INDEX:+--extra-index-url "$PIP_EXTRA_INDEX"} -r /tmp/requirements.txt
COPY operator/ operator/
COPY app/ app/
RUN /opt/venv/bin/pip install --no-deps ${PIP_INDEX:+--index-url "$PIP_INDEX"} ${PIP_EXTRA_INDEX:+--extra-index-url "$PIP_EXTRA_INDEX"} . \
 && /opt/venv/bin/archop --help >/dev/null \
 && /opt/venv/bin/python -c "import demoapp.main, demoapp.migrate; demoapp.migrate.schema_sql()"

# Shared runtime: the venv and an unprivileged user. Nothing at run time needs a shell.
FROM ${BASE_IMAGE} AS runtime
RUN groupadd --gid 10001 archop && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin archop
COPY --from=build /opt/venv /opt/venv
# Bytecode was compiled at install time; the root filesystem is read-only at run time.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /tmp

FROM runtime AS operator
ENTRYPOINT ["/opt/venv/bin/archop"]
CMD ["run"]

# Last stage: a plain `docker build .` gives the app.
FROM runtime AS app
EXPOSE 8080
ENTRYPOINT ["/opt/venv/bin/demoapp"]
