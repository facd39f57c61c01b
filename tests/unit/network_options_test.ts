/**
 * The network settings read from the environment and the AWS config file
 * (pure parts): which requests go through which proxy, how the proxy's
 * credentials are sent, and what the profile says about CA bundles and
 * addressing.
 */
import { assertEquals } from "../_assert.ts";
import { parseProfile } from "../../lib/store/s3/aws_config.ts";
import {
  describeProxy,
  proxyAuthorization,
  proxyFor,
  proxySettings,
} from "../../lib/store/s3/transport/proxy.ts";

const env = (vars: Record<string, string>) => (name: string) => vars[name];

Deno.test("HTTPS_PROXY and HTTP_PROXY by scheme, either case, lower case first", () => {
  const settings = proxySettings(env({
    HTTPS_PROXY: "http://upper:3128",
    https_proxy: "http://lower:3128",
    HTTP_PROXY: "proxy.example:8080",
  }));
  assertEquals(proxyFor(new URL("https://b.s3.amazonaws.com/"), settings)?.host, "lower:3128");
  assertEquals(proxyFor(new URL("http://minio:9000/"), settings)?.host, "proxy.example:8080");
  assertEquals(proxyFor(new URL("https://x/"), proxySettings(env({}))), undefined);
});

Deno.test("NO_PROXY: names, .domains, ports and *; metadata endpoints never proxied", () => {
  const settings = proxySettings(env({
    HTTPS_PROXY: "http://p:3128",
    HTTP_PROXY: "http://p:3128",
    NO_PROXY: " minio.internal, .corp.example ,ceph:7480,[::1]",
  }));
  const via = (url: string) => proxyFor(new URL(url), settings)?.host;
  assertEquals(via("https://minio.internal/"), undefined);
  assertEquals(via("https://a.minio.internal/"), undefined);
  assertEquals(via("https://s3.corp.example/"), undefined);
  assertEquals(via("https://corp.example/"), undefined);
  assertEquals(via("http://ceph:7480/"), undefined);
  assertEquals(via("http://ceph:80/"), "p:3128");
  assertEquals(via("http://[::1]:9000/"), undefined);
  assertEquals(via("https://notminio.internal/"), "p:3128");
  assertEquals(via("http://169.254.169.254/latest/api/token"), undefined);
  assertEquals(via("http://169.254.170.2/v2/credentials"), undefined);
  assertEquals(via("http://[fd00:ec2::254]/"), undefined);
  const all = proxySettings(env({ HTTPS_PROXY: "http://p:3128", no_proxy: "*" }));
  assertEquals(proxyFor(new URL("https://anything/"), all), undefined);
});

Deno.test("proxy credentials become Basic auth and are never part of its name", () => {
  const proxy = new URL("http://backup:p%40ss%3Aword@proxy:3128");
  assertEquals(proxyAuthorization(proxy), `Basic ${btoa("backup:p@ss:word")}`);
  assertEquals(describeProxy(proxy), "proxy:3128");
  assertEquals(proxyAuthorization(new URL("http://proxy:3128")), undefined);
});

Deno.test("the profile's ca_bundle and s3 addressing_style", () => {
  const text = [
    "[default]",
    "region = us-east-1",
    "ca_bundle = /etc/default.pem",
    "",
    "[profile backup]  ; the agent's",
    "ca_bundle = /etc/ssl/corp.pem",
    "s3 =",
    "  addressing_style = path",
    "  max_concurrent_requests = 4",
    "region = eu-west-1",
    "[profile other]",
    "s3 =",
    "  addressing_style = virtual",
  ].join("\n");
  assertEquals(parseProfile(text, "backup"), {
    caBundle: "/etc/ssl/corp.pem",
    addressingStyle: "path",
  });
  assertEquals(parseProfile(text, "default"), { caBundle: "/etc/default.pem" });
  assertEquals(parseProfile(text, "other"), { addressingStyle: "virtual" });
  assertEquals(parseProfile(text, "missing"), {});
});
