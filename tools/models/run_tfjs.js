// Runs an unmodified TFJS graph model (model.json + .bin from the npm tarball) with @tensorflow/tfjs
// (pure-JS 'cpu' backend), one sample at a time: the reference runtime for BlazeFace parity.
// usage: TFJS_NODE_MODULES=/path/to/node_modules node run_tfjs.js <model.json> <input.f32> <N,H,W,C> <out_prefix> <out1,out2,...>
// writes <out_prefix>.<k>.f32 (all N samples concatenated) per requested output and <out_prefix>.json (shapes, version)
const path = require('path');
const fs = require('fs');
const nodeModules = process.env.TFJS_NODE_MODULES || path.join(process.cwd(), 'node_modules');
const tf = require(path.join(nodeModules, '@tensorflow/tfjs'));

function fileHandler(jsonPath) {
  return {
    load: async () => {
      const j = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
      const dir = path.dirname(jsonPath);
      const weightSpecs = [];
      const buffers = [];
      for (const g of j.weightsManifest) {
        for (const w of g.weights) weightSpecs.push(w);
        for (const p of g.paths) buffers.push(fs.readFileSync(path.join(dir, p)));
      }
      const all = Buffer.concat(buffers);
      const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
      return { modelTopology: j.modelTopology, weightSpecs, weightData, format: j.format,
        generatedBy: j.generatedBy, convertedBy: j.convertedBy, signature: j.signature,
        userDefinedMetadata: j.userDefinedMetadata };
    },
  };
}

async function main() {
  const [modelJson, inputFile, shapeStr, outPrefix, outNamesStr] = process.argv.slice(2);
  await tf.setBackend('cpu');
  await tf.ready();
  const model = await tf.loadGraphModel(fileHandler(modelJson));
  const shape = shapeStr.split(',').map(Number);
  const buf = fs.readFileSync(inputFile);
  const data = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  const [n, ...rest] = shape;
  const per = rest.reduce((a, b) => a * b, 1);
  const outNames = outNamesStr.split(',');
  const chunks = outNames.map(() => []);
  const shapes = {};
  for (let i = 0; i < n; i++) {
    const x = tf.tensor(data.slice(i * per, (i + 1) * per), [1, ...rest], 'float32');
    let res = model.execute(x, outNames);
    if (!Array.isArray(res)) res = [res];
    for (let k = 0; k < outNames.length; k++) {
      chunks[k].push(Buffer.from((await res[k].data()).buffer));
      shapes[outNames[k]] = res[k].shape;
    }
    tf.dispose([x, ...res]);
  }
  for (let k = 0; k < outNames.length; k++) fs.writeFileSync(`${outPrefix}.${k}.f32`, Buffer.concat(chunks[k]));
  fs.writeFileSync(`${outPrefix}.json`, JSON.stringify({ backend: tf.getBackend(), tfjs: tf.version.tfjs, shapes, n }));
}
main().catch((e) => { console.error(e); process.exit(1); });
