const axios = require('axios');

const client = axios.create({
  baseURL: 'https://api.kerosyne.trade/v1',
  headers: { 'X-API-Key': process.env.KEROSYNE_API_KEY }
});

async function getPositions() {
  const response = await client.get('/positions');
  return response.data.positions;
}

async function createPosition(data) {
  const response = await client.post('/positions', data);
  return response.data.position;
}
