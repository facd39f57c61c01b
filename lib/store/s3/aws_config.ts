/**
 * The few settings tablesnap takes from the AWS CLI's config file (the
 * active profile of `AWS_CONFIG_FILE`, else `~/.aws/config`): `ca_bundle`
 * and the `s3` section's `addressing_style`. The SDK reads credentials and
 * region itself; these two it does not know.
 */

export interface ProfileSettings {
  caBundle?: string | undefined;
  addressingStyle?: string | undefined;
}

/** The active profile's settings; an absent or unreadable file has none. */
export function profileSettings(env: (name: string) => string | undefined): ProfileSettings {
  const home = env("HOME");
  const path = env("AWS_CONFIG_FILE") ?? (home ? `${home}/.aws/config` : undefined);
  if (!path) return {};
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch {
    return {};
  }
  const profile = env("AWS_PROFILE") ?? env("AWS_DEFAULT_PROFILE") ?? "default";
  return parseProfile(text, profile);
}

/** The settings of `profile` in an AWS config file's text (pure). */
export function parseProfile(text: string, profile: string): ProfileSettings {
  const wanted = profile === "default" ? ["default", "profile default"] : [`profile ${profile}`];
  const settings: ProfileSettings = {};
  let inProfile = false;
  let inS3 = false;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/\s[#;].*$/, "");
    if (/^\s*([#;]|$)/.test(line)) continue;
    const section = /^\s*\[\s*([^\]]+?)\s*\]/.exec(line);
    if (section) {
      inProfile = wanted.includes(section[1]!.replace(/\s+/g, " "));
      inS3 = false;
      continue;
    }
    if (!inProfile) continue;
    const pair = /^(\s*)([^=\s]+)\s*=\s*(.*?)\s*$/.exec(line);
    if (!pair) continue;
    const [, indent, key, value] = pair;
    if (indent === "") inS3 = key === "s3" && value === "";
    if (indent === "" && key === "ca_bundle") settings.caBundle = value;
    if (indent !== "" && inS3 && key === "addressing_style") settings.addressingStyle = value;
  }
  return settings;
}
