import { hostname } from 'node:os';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';

/** service.instance.id (not yet in the stable semantic conventions): this process on this host. */
const ATTR_SERVICE_INSTANCE_ID = 'service.instance.id';

/** The instance id of this process, the same one traces carry: `<pid>@<host>`. */
export function serviceInstanceId(): string {
  return `${process.pid}@${process.env['HOSTNAME'] ?? hostname()}`;
}

/** The OpenTelemetry resource of the worker's metrics and spans: service name, version, instance. */
export function telemetryResource(serviceName: string, version: string): Resource {
  return resourceFromAttributes({
    [ATTR_SERVICE_NAME]: serviceName,
    [ATTR_SERVICE_VERSION]: version,
    [ATTR_SERVICE_INSTANCE_ID]: serviceInstanceId(),
  });
}
