/** How node was started — its own flags and NODE_OPTIONS — for the command's V8 settings to defer to. */

export interface NodeFlags {
  execArgv: readonly string[]
  nodeOptions: string | undefined
}

export const startedWith = (): NodeFlags => ({ execArgv: process.execArgv, nodeOptions: process.env.NODE_OPTIONS })

/**
 * Whether the operator gave node a V8 flag named `--name` (any value, `--no-name` too), on node's
 * command line or in NODE_OPTIONS, in either spelling (`-` or `_`).
 */
export function givenToNode(name: string, node: NodeFlags): boolean {
  const wanted = name.replace(/^--/, '').replace(/_/g, '-')
  return [...node.execArgv, ...(node.nodeOptions ?? '').split(/\s+/)].some((arg) => {
    const flag = arg.replace(/_/g, '-').replace(/=.*$/, '')
    return flag === `--${wanted}` || flag === `--no-${wanted}`
  })
}
