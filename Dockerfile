# syntax=docker/dockerfile:1

# The streamscore worker.
#
#   docker build -t streamscore .
#   docker run --init --rm -e STREAMSCORE_KAFKA_BROKERS=broker:9092 streamscore
#
# docker-compose.yml runs it next to a single-node Kafka. Configuration comes from STREAMSCORE_*
# variables (config/README.md) or a file named by STREAMSCORE_CONFIG; models are read from
# /app/models (model.repository is relative to the working directory): mount another folder
# there to serve other models without rebuilding.
#
# Two stages: the first compiles TypeScript with the dev dependencies, the second holds the
# production dependencies, the compiled JavaScript and the files read at run time, and nothing
# else (no compiler, no sources, no tests).

ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# No install script is needed to compile: --ignore-scripts skips the root's own `prepare`
# (the build runs explicitly below, once the sources are here) and the native TensorFlow
# download of @tensorflow/tfjs-node-gpu, which only the runtime stage can use.
RUN --mount=type=cache,target=/root/.npm npm ci --ignore-scripts --no-audit --no-fund
# The one patched dependency (patches/: kafkajs's record encoder, same bytes, fewer allocations;
# its record batch checksum by crc-32, a regular dependency the runtime stage installs too),
# applied here because --ignore-scripts skipped the postinstall that applies it; the runtime
# stage copies the patched package.
COPY patches ./patches
RUN npx patch-package --error-on-fail
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# Production dependencies only. Install scripts:
# - --ignore-scripts, because npm ci runs the root package's lifecycle scripts too, and a
#   `prepare: npm run build` would fail here (no TypeScript, no sources); dist/ comes from the
#   build stage instead.
# - but that also skips the install script of the optional @tensorflow/tfjs-node-gpu, which
#   downloads libtensorflow (GPU build, several hundred MB) and the Node binding, so it is run
#   on its own with `npm rebuild`. If that fails (no network, an architecture without prebuilt
#   binaries, or --build-arg TFJS_NODE_GPU=false) the package is removed, as npm does for a
#   failed optional dependency, and model.backend=auto falls through to the wasm backend
#   (@tensorflow/tfjs-backend-wasm, a regular dependency whose .wasm files need no script), so
#   the image always serves at least with wasm.
# - with the download, auto picks native TensorFlow. This base image has no CUDA/cuDNN, so it
#   runs on the CPU; for the GPU, build FROM an image with the CUDA 11.2 / cuDNN 8 libraries
#   that libtensorflow 2.9 expects (NODE_IMAGE) and run with the NVIDIA container toolkit.
ARG TFJS_NODE_GPU=true
RUN --mount=type=cache,target=/root/.npm \
    npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
    && if [ "$TFJS_NODE_GPU" = "true" ] && [ -d node_modules/@tensorflow/tfjs-node-gpu ]; then \
         npm rebuild --foreground-scripts @tensorflow/tfjs-node-gpu \
         || { echo "@tensorflow/tfjs-node-gpu could not install its native binary: removed, the wasm backend will serve" >&2; \
              rm -rf node_modules/@tensorflow/tfjs-node-gpu; }; \
       else \
         rm -rf node_modules/@tensorflow/tfjs-node-gpu; \
       fi
COPY --from=build /app/node_modules/kafkajs ./node_modules/kafkajs
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY schemas ./schemas
COPY models ./models
COPY config ./config
# Everything above belongs to root and is only readable by the worker, which needs no writes.
USER node
# GET /healthz, /readyz and /metrics (Prometheus text); http.port, STREAMSCORE_HTTP_PORT.
EXPOSE 9464
# Liveness: the process answers HTTP. The image has no curl, so node asks. (Kubernetes ignores
# this and uses its own probes: livenessProbe on /healthz, readinessProbe on /readyz.)
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.STREAMSCORE_HTTP_PORT || 9464) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Stopping: SIGTERM drains in-flight requests for shutdown.drainTimeoutMs, then commits and leaves
# the group; give the container longer than that (docker stop -t, compose stop_grace_period).
# Run with --init (compose: init: true) so a signal that arrives before the worker has installed
# its handlers still stops it: node as PID 1 would ignore it.
ENTRYPOINT ["node", "bin/streamscore.js"]
CMD ["run"]
