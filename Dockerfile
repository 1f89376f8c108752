# One image for every dmg process of a site: the cloud, the nodes, Flower.
# dmg's CI has no Docker: it does not build this image, but tests/containers/ checks
# what it copies, its ENV, ENTRYPOINT, CMD and EXPOSE, and runs its entrypoints as
# plain processes (README.md, "Containers"). No secret is ever copied or set here.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DMG_DATA_DIR=/data

WORKDIR /src
COPY pyproject.toml README.md ./
COPY settings ./settings
COPY dmg ./dmg
COPY workers ./workers
COPY dispatcher ./dispatcher
RUN pip install . \
 && useradd --create-home --uid 10001 dmg \
 && mkdir -p /data /share \
 && chown dmg:dmg /data /share

USER dmg
WORKDIR /home/dmg
VOLUME ["/data"]
EXPOSE 8050 5555
ENTRYPOINT ["dmg"]
CMD ["--help"]
