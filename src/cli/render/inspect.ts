import type { ChalkInstance } from 'chalk';
import type { InspectReport } from '../../inspect.js';
import { paintStatus, renderTable, STATUS_MARK } from './format.js';

/** The flutter-doctor style checklist, then one table per check that found something. */
export async function renderInspect(color: ChalkInstance, report: InspectReport, database: string, limit: number): Promise<string> {
  const lines: string[] = [color.bold(`queue-doctor inspect — ${database}`), ''];
  const width = Math.max(...report.checks.map((c) => c.id.length));
  for (const check of report.checks) {
    const mark = paintStatus(color, check.status, `[${STATUS_MARK[check.status]}]`);
    lines.push(`${mark} ${check.id.padEnd(width)}  ${check.summary}`);
    if (check.remedy) lines.push(`    ${' '.repeat(width)}  ${color.cyan('→')} ${check.remedy}`);
  }
  for (const check of report.checks.filter((c) => c.status !== 'ok' && c.items.length > 0)) {
    const shown = check.items.length < check.count ? ` (first ${check.items.length} of ${check.count}; --limit ${limit})` : ` (${check.count})`;
    lines.push('', paintStatus(color, check.status, `${STATUS_MARK[check.status]} ${check.id}`) + color.dim(shown));
    lines.push(await renderTable(color, check.items));
  }
  return lines.join('\n');
}

export function renderVerdict(color: ChalkInstance, report: InspectReport, failOn: string, exitCode: number): string {
  const counts = { fail: 0, warn: 0, ok: 0 };
  for (const check of report.checks) counts[check.status] += 1;
  const line = `${counts.fail} failed · ${counts.warn} warning${counts.warn === 1 ? '' : 's'} · ${counts.ok} ok — exit ${exitCode} (--fail-on ${failOn})`;
  const worst = report.checks.find((c) => c.status === 'fail') ?? report.checks.find((c) => c.status === 'warn');
  const next = worst?.remedy ? `\nNext step: ${worst.remedy}` : '';
  return `\n${paintStatus(color, report.status, line)}${next}`;
}
