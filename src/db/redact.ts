/** Replaces the password of a postgres:// URL (or key=value string) with "***". */
export function redactConnectionString(connection: string): string {
  try {
    const url = new URL(connection);
    if (url.password) url.password = '***';
    url.searchParams.forEach((_value, key) => {
      if (key.toLowerCase() === 'password') url.searchParams.set(key, '***');
    });
    return url.toString();
  } catch {
    return connection
      .replace(/(:\/\/[^:/@\s]*:)[^@\s]*@/g, '$1***@')
      .replace(/(password\s*=\s*)('[^']*'|\S+)/gi, '$1***');
  }
}

/** Scrubs every occurrence of the given secrets from a message before it is shown. */
export function scrubSecrets(message: string, secrets: readonly string[]): string {
  let scrubbed = message;
  for (const secret of secrets) {
    if (secret.length >= 1) scrubbed = scrubbed.split(secret).join('***');
  }
  return scrubbed;
}
