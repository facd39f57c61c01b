/**
 * packaging/prometheus/tablesnap-alerts.yml: `promtool check rules` accepts
 * it, and `promtool test rules` proves, on synthetic series, that each alert
 * fires when it should (with the labels and annotations a receiver routes
 * on) and stays silent when it should. promtool (Debian package
 * `prometheus`) is a hard requirement: .ci/run installs it; without it these
 * tests fail, they do not skip.
 */
import { assert, assertEquals, assertStringIncludes } from "./_assert.ts";
import { promtool, REPO, tempDir } from "./_helpers.ts";

const RULES = `${REPO}packaging/prometheus/tablesnap-alerts.yml`;

const BEHIND_DESCRIPTION = (waited: string) =>
  `The oldest file not yet in the bucket has waited ${waited}. ` +
  "See `journalctl -u tablesnap` and tablesnap_upload_retries_total for the reason.";

const PINS_DESCRIPTION = "Compaction can delete these files before their upload. " +
  "limit: raise --pin-max-bytes or the upload rate; " +
  "unavailable: the pin directory cannot take hard links (see the log).";

/**
 * The rule unit tests, for the rules file at `rulesPath` (absolute: promtool
 * resolves rule_files relative to the test file, which lives in a temp dir).
 * Every instance is named after what it shows; exp_alerts lists every alert
 * that must be firing at eval_time and nothing else (promtool compares the
 * whole set, labels and annotations included; it adds alertname itself).
 */
function unitTests(rulesPath: string): string {
  const page = (instance: string) => `{severity: page, instance: "${instance}", job: tablesnap}`;
  return `
rule_files:
  - ${JSON.stringify(rulesPath)}
evaluation_interval: 1m
tests:
  # TablesnapBackupBehind: above 900 s for 5 minutes.
  - interval: 1m
    input_series:
      # Behind from the start and falling further behind.
      - series: 'tablesnap_oldest_pending_age_seconds{instance="behind:9108",job="tablesnap"}'
        values: '1000+60x20'
      # 10 minutes behind: under the threshold.
      - series: 'tablesnap_oldest_pending_age_seconds{instance="ten-minutes:9108",job="tablesnap"}'
        values: '600x20'
      # Exactly at the threshold: not above it.
      - series: 'tablesnap_oldest_pending_age_seconds{instance="at-threshold:9108",job="tablesnap"}'
        values: '900x20'
      # Above 900 s for minutes 0 to 4, caught up at minute 5: never 5 minutes long.
      - series: 'tablesnap_oldest_pending_age_seconds{instance="caught-up:9108",job="tablesnap"}'
        values: '1000x4 0x15'
    alert_rule_test:
      - eval_time: 4m
        alertname: TablesnapBackupBehind
        exp_alerts: []
      - eval_time: 5m
        alertname: TablesnapBackupBehind
        exp_alerts:
          - exp_labels: ${page("behind:9108")}
            exp_annotations:
              summary: "tablesnap on behind:9108 is more than 15 minutes behind"
              description: ${JSON.stringify(BEHIND_DESCRIPTION("21m 40s"))}
      - eval_time: 15m
        alertname: TablesnapBackupBehind
        exp_alerts:
          - exp_labels: ${page("behind:9108")}
            exp_annotations:
              summary: "tablesnap on behind:9108 is more than 15 minutes behind"
              description: ${JSON.stringify(BEHIND_DESCRIPTION("31m 40s"))}

  # TablesnapUnhealthy: tablesnap_healthy 0, or the target down, for 10 minutes.
  - interval: 1m
    input_series:
      # Running and scraped, but not watching or not reaching S3.
      - series: 'tablesnap_healthy{instance="unhealthy:9108",job="tablesnap"}'
        values: '0x20'
      - series: 'up{instance="unhealthy:9108",job="tablesnap"}'
        values: '1x20'
      # Healthy and scraped: the normal case.
      - series: 'tablesnap_healthy{instance="healthy:9108",job="tablesnap"}'
        values: '1x20'
      - series: 'up{instance="healthy:9108",job="tablesnap"}'
        values: '1x20'
      # Down: the scrape fails, so there is no tablesnap_healthy at all.
      - series: 'up{instance="down:9108",job="tablesnap"}'
        values: '0x20'
      # Unhealthy for minutes 0 to 8, recovered at minute 9: never 10 minutes long.
      - series: 'tablesnap_healthy{instance="recovered:9108",job="tablesnap"}'
        values: '0x8 1x11'
      - series: 'up{instance="recovered:9108",job="tablesnap"}'
        values: '1x20'
      # Another job's target down is not tablesnap's business.
      - series: 'up{instance="other:9100",job="node"}'
        values: '0x20'
    alert_rule_test:
      - eval_time: 9m
        alertname: TablesnapUnhealthy
        exp_alerts: []
      - eval_time: 10m
        alertname: TablesnapUnhealthy
        exp_alerts:
          - exp_labels: ${page("unhealthy:9108")}
            exp_annotations:
              summary: "tablesnap on unhealthy:9108 is down, not watching, or cannot reach S3"
          - exp_labels: ${page("down:9108")}
            exp_annotations:
              summary: "tablesnap on down:9108 is down, not watching, or cannot reach S3"

  # TablesnapUploadsFailing: any increase of a failure counter within 30 minutes.
  - interval: 1m
    input_series:
      # One upload given up at minute 3 (network), none after.
      - series: 'tablesnap_upload_failures_total{instance="failing:9108",job="tablesnap",reason="network"}'
        values: '0 0 0 1x40'
      # Every reason is exported at 0 from the start: flat.
      - series: 'tablesnap_upload_failures_total{instance="failing:9108",job="tablesnap",reason="throttled"}'
        values: '0x43'
      # Failures long ago, flat since: not failing now.
      - series: 'tablesnap_upload_failures_total{instance="flat:9108",job="tablesnap",reason="network"}'
        values: '5x43'
    alert_rule_test:
      - eval_time: 2m
        alertname: TablesnapUploadsFailing
        exp_alerts: []
      - eval_time: 5m
        alertname: TablesnapUploadsFailing
        exp_alerts:
          - exp_labels: {severity: ticket, instance: "failing:9108", job: tablesnap, reason: network}
            exp_annotations:
              summary: "tablesnap on failing:9108: uploads failing (network)"
      # The 30-minute window has moved past the failure.
      - eval_time: 40m
        alertname: TablesnapUploadsFailing
        exp_alerts: []

  # TablesnapPinsRefused: any refused pin within 30 minutes.
  - interval: 1m
    input_series:
      # Past --pin-max-bytes at minute 3 (two files), none after.
      - series: 'tablesnap_pins_refused_total{instance="full:9108",job="tablesnap",reason="limit"}'
        values: '0 0 0 2x40'
      # Every reason is exported at 0 from the start: flat.
      - series: 'tablesnap_pins_refused_total{instance="full:9108",job="tablesnap",reason="unavailable"}'
        values: '0x43'
      # Refusals long ago, flat since.
      - series: 'tablesnap_pins_refused_total{instance="flat:9108",job="tablesnap",reason="limit"}'
        values: '7x43'
    alert_rule_test:
      - eval_time: 2m
        alertname: TablesnapPinsRefused
        exp_alerts: []
      - eval_time: 5m
        alertname: TablesnapPinsRefused
        exp_alerts:
          - exp_labels: {severity: ticket, instance: "full:9108", job: tablesnap, reason: limit}
            exp_annotations:
              summary: "tablesnap on full:9108: files not pinned (limit)"
              description: ${JSON.stringify(PINS_DESCRIPTION)}
      # Still within the 30-minute window.
      - eval_time: 20m
        alertname: TablesnapPinsRefused
        exp_alerts:
          - exp_labels: {severity: ticket, instance: "full:9108", job: tablesnap, reason: limit}
            exp_annotations:
              summary: "tablesnap on full:9108: files not pinned (limit)"
              description: ${JSON.stringify(PINS_DESCRIPTION)}
      - eval_time: 40m
        alertname: TablesnapPinsRefused
        exp_alerts: []
`;
}

/** `promtool test rules` of the unit tests above against `rulesPath`. */
async function testRules(rulesPath: string): Promise<{ code: number; output: string }> {
  const dir = await Deno.makeTempDir({ prefix: "tablesnap-alerts-" });
  try {
    const file = `${dir}/tablesnap-alerts.test.yml`;
    await Deno.writeTextFile(file, unitTests(rulesPath));
    return await promtool(["test", "rules", file]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("tablesnap-alerts.yml passes promtool check rules", async () => {
  const { code, output } = await promtool(["check", "rules", RULES]);
  assertEquals(code, 0, output);
  assertStringIncludes(output, "SUCCESS: 4 rules found", output);
});

Deno.test("the alert rules fire when they should and only then (promtool test rules)", async () => {
  const { code, output } = await testRules(RULES);
  assertEquals(code, 0, output);
  assertStringIncludes(output, "SUCCESS", output);
});

Deno.test("promtool test rules notices a rule that is wrong", async () => {
  const rules = await Deno.readTextFile(RULES);
  const mutations: [string, string][] = [
    ["tablesnap_oldest_pending_age_seconds > 900", "tablesnap_oldest_pending_age_seconds > 1800"],
    ["tablesnap_oldest_pending_age_seconds > 900", "tablesnap_oldest_pending_age_seconds > 500"],
    ["tablesnap_oldest_pending_age_seconds > 900", "tablesnap_oldest_pending_age_seconds >= 900"],
    ["        for: 5m\n", "        for: 4m\n"],
    [
      'tablesnap_healthy == 0 or up{job="tablesnap"} == 0',
      "tablesnap_healthy == 0",
    ],
    ['tablesnap_healthy == 0 or up{job="tablesnap"} == 0', "tablesnap_healthy == 0 or up == 0"],
    ["        for: 10m\n", "        for: 5m\n"],
    [
      "increase(tablesnap_upload_failures_total[30m])",
      "increase(tablesnap_upload_failures_total[1h])",
    ],
    [
      "increase(tablesnap_upload_failures_total[30m]) > 0",
      "sum(increase(tablesnap_upload_failures_total[30m])) > 0",
    ],
    ["          severity: ticket", "          severity: page"],
    [
      "increase(tablesnap_pins_refused_total[30m]) > 0",
      "increase(tablesnap_pins_refused_total[5m]) > 0",
    ],
    [
      "increase(tablesnap_pins_refused_total[30m]) > 0",
      "increase(tablesnap_pins_refused_total[30m]) > 2",
    ],
  ];
  await using dir = await tempDir("tablesnap-alerts-mutant-");
  for (const [from, to] of mutations) {
    assert(rules.includes(from), `mutation source not in the rules: ${from}`);
    const mutant = `${dir.path}/mutant.yml`;
    await Deno.writeTextFile(mutant, rules.replace(from, to));
    // Still valid rules: only the unit tests can tell it is wrong.
    const check = await promtool(["check", "rules", mutant]);
    assertEquals(check.code, 0, check.output);
    const { code, output } = await testRules(mutant);
    assert(code !== 0, `promtool test rules passed with ${JSON.stringify(to)}:\n${output}`);
  }
});
