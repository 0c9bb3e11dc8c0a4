/**
 * The tracing thread's span exporter: the SDK's OTLP/HTTP export path (its transport, retries,
 * timeouts, concurrency limit, partial-success handling, `OTEL_EXPORTER_OTLP_*` variables and
 * exporter metrics), built as the SDK's `OTLPTraceExporter` (exporter-trace-otlp-proto) builds it,
 * with streamscore's serializer in place of the SDK's (trace-serializer.ts says why).
 */
import {
  OTLPExporterBase,
  type OTLPExporterNodeConfigBase,
} from '@opentelemetry/otlp-exporter-base';
import {
  convertLegacyHttpOptions,
  createOtlpHttpExportDelegate,
} from '@opentelemetry/otlp-exporter-base/node-http';
import { TraceExporterMetricsHelper } from '@opentelemetry/otlp-transformer';
import type { ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace';
import { TraceSerializer } from './trace-serializer.js';

/** The exporter's `otel.component.type`, as the SDK's OTLP/HTTP span exporter names itself. */
const COMPONENT_TYPE = 'otlp_http_span_exporter';

export class TraceExporter extends OTLPExporterBase<ReadableSpan[]> implements SpanExporter {
  private readonly serializer: TraceSerializer;

  constructor(config: OTLPExporterNodeConfigBase, serializer = new TraceSerializer()) {
    super(
      createOtlpHttpExportDelegate(
        convertLegacyHttpOptions(config, 'TRACES', 'v1/traces', {
          'Content-Type': 'application/x-protobuf',
        }),
        serializer,
        COMPONENT_TYPE,
        TraceExporterMetricsHelper,
        undefined,
      ),
    );
    this.serializer = serializer;
  }

  /**
   * The SDK's export, with the body given back to the serializer once the export has ended
   * (sent, retried, failed or timed out: the SDK's transport reads it no more), to be written
   * into again.
   */
  override export(spans: ReadableSpan[], resultCallback: (result: ExportResult) => void): void {
    const lent: { body: Uint8Array | undefined; ended: boolean } = {
      body: undefined,
      ended: false,
    };
    super.export(spans, (result) => {
      lent.ended = true;
      if (lent.body) this.serializer.giveBack(lent.body);
      resultCallback(result);
    });
    // serializeRequest ran within super.export, or did not (too many exports in flight).
    lent.body = this.serializer.takeLent();
    if (lent.ended && lent.body) this.serializer.giveBack(lent.body);
  }
}
