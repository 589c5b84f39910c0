import { assert, describe, it } from "@effect/vitest"
import { existsSync } from "node:fs"
import { dirname, join, normalize } from "node:path"
import { githubSlug, headingAnchors, loadAlerts, loadDashboard, readText, repoPath, resolveRunbook, runbookBase } from "./support.ts"

/** The guides this repository promises (issue 6), each with the headings readers and alerts link to. */
const guides = [
  "docs/dle-runbook.md",
  "docs/incident-playbook.md",
  "docs/capacity-model.md",
  "docs/migration-roadmap.md",
  "docs/postgres-tuning.md",
  "docs/observability-guide.md",
  "docs/USAGE_GUIDE.md",
  "docs/USAGE_GUIDE.pt-BR.md"
]

/** Relative Markdown links `[text](target)` outside fenced code. */
const relativeLinks = (markdown: string): ReadonlyArray<string> => {
  const withoutCode = markdown.replace(/^```[\s\S]*?^```/gm, "").replace(/`[^`\n]*`/g, "")
  return [...withoutCode.matchAll(/\]\(([^)\s]+)\)/g)].map((match) => match[1]!).filter((target) => !/^[a-z]+:/.test(target))
}

describe("runbooks and guides (docs/)", () => {
  it("GitHub anchors: the slug rules the resolver relies on", () => {
    assert.strictEqual(githubSlug("Relay not progressing"), "relay-not-progressing")
    assert.strictEqual(githubSlug("Oldest pending over SLO"), "oldest-pending-over-slo")
    assert.strictEqual(githubSlug("`npx outbox dlq` — redrive!"), "npx-outbox-dlq--redrive")
    assert.strictEqual(githubSlug("Configuração e variáveis"), "configuração-e-variáveis")
    assert.deepStrictEqual(headingAnchors("# A\n```\n# not a heading\n```\n## A\n### B #\n"), ["a", "a-1", "b"])
  })

  it("every alert's runbook_url resolves to an existing heading of docs/", () => {
    for (const rule of loadAlerts()) {
      const resolved = resolveRunbook(rule.annotations.runbook_url ?? "")
      assert.notProperty(resolved, "problem", `${rule.alert}: runbook_url ${rule.annotations.runbook_url} ${"problem" in resolved ? resolved.problem : ""}`)
    }
  })

  it("the resolver refuses a missing heading, a missing file and a foreign URL", () => {
    assert.property(resolveRunbook(`${runbookBase}docs/incident-playbook.md#no-such-heading`), "problem")
    assert.property(resolveRunbook(`${runbookBase}docs/no-such-file.md#relay-not-progressing`), "problem")
    assert.property(resolveRunbook("https://example.com/docs/incident-playbook.md#relay-not-progressing"), "problem")
    assert.property(resolveRunbook(`${runbookBase}docs/incident-playbook.md`), "problem")
  })

  it("the incident playbook's table lists every alert, and each alert's runbook section names it", () => {
    const playbook = readText("docs/incident-playbook.md")
    for (const rule of loadAlerts()) {
      assert.strictEqual(playbook.split(`| [${rule.alert}](`).length - 1, 1, `${rule.alert}: one row in the table`)
      const resolved = resolveRunbook(rule.annotations.runbook_url ?? "")
      if ("problem" in resolved) assert.fail(`${rule.alert}: ${resolved.problem}`)
      // the text from the heading to the next heading of the same or a higher level
      const lines = readText(resolved.file).split("\n")
      const start = lines.findIndex((line) => /^#{1,6} /.test(line) && githubSlug(line.replace(/^#+ /, "")) === resolved.anchor)
      const level = /^#+/.exec(lines[start]!)![0].length
      const end = lines.findIndex((line, i) => i > start && new RegExp(`^#{1,${level}} `).test(line))
      const section = lines.slice(start, end === -1 ? undefined : end).join("\n")
      assert.include(section, `\`${rule.alert}\``, `${rule.alert}: named in ${resolved.file}#${resolved.anchor}`)
      assert.include(section, `(${rule.labels.severity})`, `${rule.alert}: its severity stated in its section`)
    }
  })

  it("the guides exist, and every relative link in them (and in the dashboard) lands on a file and heading", () => {
    for (const guide of guides) {
      assert.isTrue(existsSync(repoPath(guide)), `${guide} exists`)
      const markdown = readText(guide)
      assert.isAbove(markdown.length, 2_000, `${guide} has content`)
      for (const link of relativeLinks(markdown)) {
        const [path, anchor] = link.split("#")
        const target = path === "" ? guide : normalize(join(dirname(guide), path!))
        assert.isTrue(existsSync(repoPath(target)), `${guide}: link ${link} → ${target} does not exist`)
        if (anchor !== undefined && target.endsWith(".md")) {
          assert.include(headingAnchors(readText(target)), anchor, `${guide}: link ${link} → no heading #${anchor} in ${target}`)
        }
      }
    }
    const links = (loadDashboard() as unknown as { links: Array<{ url: string }> }).links
    for (const { url } of links) {
      assert.isTrue(url.startsWith(runbookBase), url)
      assert.isTrue(existsSync(repoPath(url.slice(runbookBase.length).split("#")[0]!)), url)
    }
  })

  it("the dead-letter runbook covers triage, a root-cause template, the redrive commands and what never to do", () => {
    const runbook = readText("docs/dle-runbook.md")
    const anchors = headingAnchors(runbook)
    for (const heading of ["triage", "root-cause-template", "redrive", "what-never-to-do"]) assert.include(anchors, heading)
    for (const command of ["npx outbox dlq list", "npx outbox dlq show", "npx outbox dlq redrive", "--reason", "--by", "--dry-run"]) {
      assert.include(runbook, command)
    }
  })

  it("the Portuguese usage guide mirrors the English one section by section", () => {
    const level2 = (markdown: string) => markdown.split("\n").filter((line) => line.startsWith("## ")).length
    const english = readText("docs/USAGE_GUIDE.md")
    const portuguese = readText("docs/USAGE_GUIDE.pt-BR.md")
    assert.strictEqual(level2(portuguese), level2(english))
    const blocks = (markdown: string) => markdown.match(/^```/gm)?.length ?? 0
    assert.strictEqual(blocks(portuguese), blocks(english), "same code blocks")
  })
})
