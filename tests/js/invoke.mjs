// Invoke the local SageMaker Runtime emulator with the AWS SDK for JavaScript v3.
//
// Usage: ENDPOINT_URL=http://127.0.0.1:8080 node invoke.mjs calls.json
// calls.json is a list of {endpointName, targetModel?, contentType?, accept?,
// customAttributes?, bodyFile?, bodyText?}; one JSON line per call is printed with the
// response (ok: true) or the exception the SDK raised (ok: false).
import { readFileSync } from "node:fs";
import {
  InvokeEndpointCommand,
  ModelError,
  SageMakerRuntimeClient,
} from "@aws-sdk/client-sagemaker-runtime";

const client = new SageMakerRuntimeClient({
  endpoint: process.env.ENDPOINT_URL,
  region: "us-east-1",
  credentials: { accessKeyId: "x", secretAccessKey: "x" },
  maxAttempts: 1,
});

const calls = JSON.parse(readFileSync(process.argv[2], "utf8"));
for (const call of calls) {
  const body = call.bodyFile ? readFileSync(call.bodyFile) : new TextEncoder().encode(call.bodyText ?? "");
  const input = {
    EndpointName: call.endpointName,
    TargetModel: call.targetModel,
    ContentType: call.contentType,
    Accept: call.accept,
    CustomAttributes: call.customAttributes,
    Body: body,
  };
  try {
    const response = await client.send(new InvokeEndpointCommand(input));
    console.log(JSON.stringify({
      ok: true,
      status: response.$metadata.httpStatusCode,
      requestId: response.$metadata.requestId,
      contentType: response.ContentType,
      invokedProductionVariant: response.InvokedProductionVariant,
      customAttributes: response.CustomAttributes,
      body: new TextDecoder().decode(response.Body),
    }));
  } catch (error) {
    console.log(JSON.stringify({
      ok: false,
      name: error.name,
      isModelError: error instanceof ModelError,
      status: error.$metadata?.httpStatusCode,
      message: error.message,
      originalStatusCode: error.OriginalStatusCode,
      originalMessage: error.OriginalMessage,
      logStreamArn: error.LogStreamArn,
    }));
  }
}
